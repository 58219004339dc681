"""Perplexity of a document model, exact under DDP."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric


def _perplexity_update(losses: Tensor, word_counts: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-batch sums: total loss, total words, sum of per-document ``loss / words``, documents."""
    losses, word_counts = losses.detach().double(), word_counts.detach().double()
    if losses.shape != word_counts.shape:
        raise ValueError(f"losses {tuple(losses.shape)} and word counts {tuple(word_counts.shape)} must match")
    if (word_counts <= 0).any():
        raise ValueError("every evaluated document needs at least one word (empty documents have no perplexity)")
    return losses.sum(), word_counts.sum(), (losses / word_counts).sum(), torch.tensor(float(losses.numel()))


class Perplexity(Metric):
    """``exp(sum_d loss_d / sum_d N_d)`` over the evaluated documents (Miao et al. 2016, NVDM).

    ``loss_d`` is a document's negative ELBO (an upper bound on ``-log p(d)``, KL included) and ``N_d``
    its number of words. The sums are metric states reduced by addition, so under DDP the value is
    the one of the whole evaluation set, not an average of per-rank perplexities. With
    ``per_document=True`` it is ``exp(mean_d loss_d / N_d)``, the per-document variant NVDM also reports.

    Args:
        per_document: Average the per-word loss over documents instead of over words.
    """

    higher_is_better = False
    full_state_update = False

    def __init__(self, per_document: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.per_document = per_document
        for name in ("loss", "words", "ratio", "documents"):
            self.add_state(name, default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, losses: Tensor, word_counts: Tensor) -> None:
        """Add documents' losses ``(B,)`` and word counts ``(B,)``."""
        loss, words, ratio, documents = _perplexity_update(losses, word_counts)
        self.loss += loss
        self.words += words
        self.ratio += ratio
        self.documents += documents

    def compute(self) -> Tensor:
        if self.per_document:
            return torch.exp(self.ratio / self.documents)
        return torch.exp(self.loss / self.words)
