"""Gumbel noise that never produces an infinity."""

from __future__ import annotations

import torch
from torch import Tensor


def sample_gumbel(shape: torch.Size | tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
    """Draw standard Gumbel noise ``g = -log(E)`` with ``E ~ Exponential(1)``.

    ``-log(E)`` is Gumbel(0, 1) because ``E = -log(U)`` for ``U ~ Uniform(0, 1)``. ``E`` is clamped
    to the smallest normal number of ``dtype`` so that an exponential draw of exactly zero cannot
    give ``g = +inf`` (a known source of NaN in Gumbel-Softmax code).

    Args:
        shape: Shape of the noise.
        dtype: Floating dtype of the noise.
        device: Device of the noise.

    Returns:
        A fresh tensor of Gumbel noise that the caller may modify in place.
    """
    noise = torch.empty(shape, dtype=dtype, device=device).exponential_()
    return noise.clamp_min_(torch.finfo(dtype).tiny).log_().neg_()
