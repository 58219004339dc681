"""The probs/logits pair shared by families built on Bernoulli trials."""

from __future__ import annotations

from torch import Tensor
from torch.distributions.utils import broadcast_all, probs_to_logits


def probs_or_logits(probs: Tensor | float | None, logits: Tensor | float | None) -> tuple[Tensor | None, Tensor]:
    """Return ``(probs, logits)`` from exactly one of them, broadcast to tensors.

    ``probs`` is returned as given (so that argument validation sees the user's value) and logits are
    derived from it with the clamping of :func:`torch.distributions.utils.probs_to_logits`.

    Raises:
        ValueError: If both or neither are given.
    """
    if (probs is None) == (logits is None):
        raise ValueError(f"give exactly one of probs or logits, got probs={probs!r} and logits={logits!r}")
    if probs is not None:
        (probs,) = broadcast_all(probs)
        return probs, probs_to_logits(probs, is_binary=True)
    (logits,) = broadcast_all(logits)
    return None, logits
