"""Closed-form KL divergence between two tables on the same outcomes (journal Proposition 6)."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.distributions import register_kl

from gengs_lightning.distributions.truncated import TruncatedDiscrete


def _same_outcomes(p: TruncatedDiscrete, q: TruncatedDiscrete) -> bool:
    if p.window is not None and q.window is not None:
        return p.window == q.window
    return p.outcomes.shape == q.outcomes.shape and bool(torch.equal(p.outcomes, q.outcomes.to(p.outcomes)))


@register_kl(TruncatedDiscrete, TruncatedDiscrete)
def kl_truncated_truncated(p: TruncatedDiscrete, q: TruncatedDiscrete) -> Tensor:
    """``KL(p || q) = sum_k pi^p_k (log pi^p_k - log pi^q_k)`` over one shared outcome table.

    Two truncations of count families on the same window are categorical distributions over the same
    outcomes, so their KL is the categorical KL (journal Proposition 6). Terms with ``pi^p_k = 0``
    contribute zero, with a zero gradient.

    Raises:
        ValueError: If the two tables do not enumerate the same outcomes.
    """
    if not _same_outcomes(p, q):
        raise ValueError(
            f"KL between truncated distributions needs one window: got {p.window or p.outcomes.shape} "
            f"and {q.window or q.outcomes.shape}"
        )
    positive = p.pmf > 0
    log_ratio = torch.where(positive, p.log_pmf - q.log_pmf, 0.0)
    return (p.pmf * log_ratio).sum(-1)
