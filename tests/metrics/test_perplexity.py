"""Perplexity: NVDM's definition, the per-document variant, exact reduction of partial states."""

from __future__ import annotations

import math

import pytest
import torch

from gengs_lightning.metrics import Perplexity


def test_corpus_and_per_document_perplexity_by_hand():
    losses, words = torch.tensor([30.0, 12.0, 50.0]), torch.tensor([10.0, 3.0, 20.0])
    corpus, per_document = Perplexity(), Perplexity(per_document=True)
    for metric in (corpus, per_document):
        metric.update(losses[:2], words[:2])
        metric.update(losses[2:], words[2:])
    assert corpus.compute().item() == pytest.approx(math.exp(92 / 33))
    assert per_document.compute().item() == pytest.approx(math.exp((3.0 + 4.0 + 2.5) / 3))


def test_two_ranks_partial_states_reduce_to_the_whole_set():
    torch.manual_seed(0)
    losses, words = torch.rand(101) * 500, torch.randint(1, 300, (101,)).float()
    losses[::2] *= 2  # the two ranks' documents differ, as real shards can
    whole = Perplexity()
    whole.update(losses, words)
    rank0, rank1 = Perplexity(), Perplexity()
    rank0.update(losses[::2], words[::2])
    rank1.update(losses[1::2], words[1::2])
    rank0.merge_state(rank1)  # what DDP's sum reduction of the states does
    assert rank0.compute().item() == pytest.approx(whole.compute().item(), rel=1e-12)
    # the naive alternative, averaging per-rank perplexities, is different here: the check has power
    half0, half1 = Perplexity(), Perplexity()
    half0.update(losses[::2], words[::2])
    half1.update(losses[1::2], words[1::2])
    naive = (half0.compute() + half1.compute()) / 2
    assert abs(naive.item() - whole.compute().item()) > 1e-3 * whole.compute().item()


@pytest.mark.parametrize(
    ("losses", "words", "message"),
    [
        (torch.tensor([1.0, 2.0]), torch.tensor([1.0]), "must match"),
        (torch.tensor([1.0, 2.0]), torch.tensor([3.0, 0.0]), "at least one word"),
    ],
)
def test_bad_updates_are_rejected(losses, words, message):
    with pytest.raises(ValueError, match=message):
        Perplexity().update(losses, words)
