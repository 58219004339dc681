"""Gumbel noise that is fast on CPU and never produces NaN."""

from __future__ import annotations

import torch
from torch import Tensor


def sample_gumbel(shape: torch.Size | tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
    """Draw standard Gumbel noise ``g = -log(-log(u))`` with ``u ~ Uniform[0, 1)``.

    ``torch.rand`` never returns 1, so ``-log(u) > 0`` and ``g < +inf``; ``u = 0`` gives ``g = -inf``,
    which gives its category zero weight in a softmax and cannot produce NaN. (``-log(E)`` with
    ``E ~ Exponential(1)``, as in ``F.gumbel_softmax``, gives ``+inf`` when ``E`` is exactly zero,
    and ``Tensor.exponential_`` is several times slower than ``torch.rand`` on CPU.)

    Args:
        shape: Shape of the noise.
        dtype: Floating dtype of the noise.
        device: Device of the noise.

    Returns:
        A fresh tensor of Gumbel noise that the caller may modify in place.
    """
    return torch.rand(shape, dtype=dtype, device=device).log_().neg_().log_().neg_()
