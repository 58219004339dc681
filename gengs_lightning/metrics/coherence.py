"""Topic coherence by normalised pointwise mutual information (NPMI) over a reference corpus."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric


def npmi_from_counts(documents: Tensor, frequency: Tensor, co_frequency: Tensor, topics: Tensor) -> Tensor:
    """Mean NPMI of every topic's word pairs.

    ``NPMI(w_i, w_j) = log(P(w_i, w_j) / (P(w_i) P(w_j))) / -log P(w_i, w_j)`` with document
    probabilities; a pair that never co-occurs scores -1 (Bouma 2009; Lau et al. 2014).

    Args:
        documents: Number of reference documents.
        frequency: Documents containing each tracked word, ``(W,)``.
        co_frequency: Documents containing both of two tracked words, ``(W, W)``.
        topics: Indices into the tracked words, ``(K, T)``: topic ``k``'s top ``T`` words.

    Returns:
        The coherence of every topic, ``(K,)``.
    """
    p_word = frequency / documents
    p_pair = co_frequency / documents
    i, j = torch.triu_indices(topics.shape[1], topics.shape[1], offset=1, device=topics.device)
    a, b = topics[:, i], topics[:, j]
    joint = p_pair[a, b]
    pmi = torch.log(joint) - torch.log(p_word[a]) - torch.log(p_word[b])
    npmi = torch.where(joint > 0, pmi / -torch.log(joint).clamp_max(-1e-12), -1.0)
    npmi = torch.where(joint >= 1.0, 1.0, npmi)  # words in every document: perfectly associated
    return npmi.mean(-1)


class TopicCoherence(Metric):
    """NPMI coherence of topics' top words, with document counts accumulated over a corpus (DDP-exact).

    The tracked words are set with :meth:`set_topics` (``(K, T)`` vocabulary ids, e.g. each topic's ten
    most probable words) before updating; the states are the document count, each tracked word's
    document frequency and the pairwise co-document frequencies, all reduced by addition.

    Args:
        num_topics: ``K``.
        top_words: ``T``.
    """

    higher_is_better = True
    full_state_update = False

    def __init__(self, num_topics: int, top_words: int = 10, **kwargs):
        super().__init__(**kwargs)
        slots = num_topics * top_words
        self.add_state("documents", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("frequency", default=torch.zeros(slots, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("co_frequency", default=torch.zeros(slots, slots, dtype=torch.float64), dist_reduce_fx="sum")
        self.register_buffer("word_ids", torch.zeros(num_topics, top_words, dtype=torch.long), persistent=False)

    def set_topics(self, word_ids: Tensor) -> None:
        """Track these ``(K, T)`` vocabulary ids; resets the counts."""
        if word_ids.shape != self.word_ids.shape:
            raise ValueError(f"topics must be {tuple(self.word_ids.shape)} word ids, got {tuple(word_ids.shape)}")
        self.reset()
        self.word_ids.copy_(word_ids)

    def update(self, counts: Tensor) -> None:
        """Add documents ``(B, V)`` of word counts."""
        present = (counts[:, self.word_ids.reshape(-1)] > 0).double()
        self.documents += counts.shape[0]
        self.frequency += present.sum(0)
        self.co_frequency += present.T @ present

    def compute(self) -> Tensor:
        """Mean coherence over topics."""
        slots = torch.arange(self.word_ids.numel(), device=self.word_ids.device).reshape(self.word_ids.shape)
        return npmi_from_counts(self.documents, self.frequency, self.co_frequency, slots).mean()
