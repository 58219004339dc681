"""TopicCoherence: NPMI by hand on a small corpus, edge cases, exact reduction of partial states."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from gengs_lightning.metrics import TopicCoherence


def npmi_by_hand(documents: list[set[int]], topic: list[int]) -> float:
    total = len(documents)
    scores = []
    for a, b in itertools.combinations(topic, 2):
        pa = sum(a in d for d in documents) / total
        pb = sum(b in d for d in documents) / total
        pab = sum(a in d and b in d for d in documents) / total
        if pab == 0:
            scores.append(-1.0)
        elif pab == 1:
            scores.append(1.0)
        else:
            scores.append(math.log(pab / (pa * pb)) / -math.log(pab))
    return sum(scores) / len(scores)


def corpus(seed: int = 0, docs: int = 60, vocab: int = 12) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    counts = torch.poisson(torch.rand(docs, vocab, generator=generator) * 1.5, generator=generator)
    counts[:, 1] = counts[:, 0]  # words 0 and 1 always together: NPMI 1 for that pair
    counts[:, 5] = torch.where(counts[:, 4] > 0, 0.0, 1.0)  # words 4 and 5 never together: NPMI -1
    return counts


def test_matches_the_definition_computed_by_hand():
    counts = corpus()
    topics = torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]])
    metric = TopicCoherence(num_topics=3, top_words=4)
    metric.set_topics(topics)
    metric.update(counts[:25])
    metric.update(counts[25:])
    documents = [set(torch.nonzero(row).flatten().tolist()) for row in counts]
    expected = sum(npmi_by_hand(documents, t) for t in topics.tolist()) / 3
    assert metric.compute().item() == pytest.approx(expected, rel=1e-12)


def test_partial_states_reduce_to_the_whole_corpus():
    counts = corpus(seed=1)
    topics = torch.tensor([[0, 2, 4], [1, 3, 5]])
    whole, rank0, rank1 = (TopicCoherence(2, 3) for _ in range(3))
    for metric in (whole, rank0, rank1):
        metric.set_topics(topics)
    whole.update(counts)
    rank0.update(counts[::2])
    rank1.update(counts[1::2])
    rank0.merge_state(rank1)
    assert rank0.compute().item() == pytest.approx(whole.compute().item(), rel=1e-12)


def test_topics_of_the_wrong_shape_are_rejected():
    with pytest.raises(ValueError, match=r"topics must be \(2, 3\) word ids, got \(3, 2\)"):
        TopicCoherence(2, 3).set_topics(torch.zeros(3, 2, dtype=torch.long))
