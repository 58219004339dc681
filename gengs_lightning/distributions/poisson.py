"""Truncated Poisson family."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import Poisson, constraints
from torch.distributions.utils import broadcast_all

from gengs_lightning.distributions.truncated import TruncatedCount
from gengs_lightning.distributions.window import Window

#: Smallest rate an encoder can produce; the float32 maths is finite down to here (and up to 1e4).
MIN_RATE = 1e-6


class TruncatedPoisson(TruncatedCount):
    """Poisson(rate) truncated to a window, tails folded into the edges (NeurIPS Section 3.1).

    ``log p_k = k log(rate) - rate - log k!``.

    Args:
        rate: Positive rate, any batch shape.
        window: Truncation level ``n`` (window ``[0, n - 1]``) or window ``[a, b]``.
        validate_args: Whether to check that the rate is positive and not NaN.
    """

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {"rate": constraints.positive}
    family_name = "poisson"

    def __init__(self, rate: Tensor | float, window: Window | int | tuple[int, int], validate_args=None):
        (self.rate,) = broadcast_all(rate)
        super().__init__(window, self.rate.shape, validate_args=validate_args)

    @property
    def params(self) -> dict[str, Tensor]:
        return {"rate": self.rate}

    @staticmethod
    def natural(rate: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``eta = log(rate)``, ``A = rate``, mean ``rate``."""
        return torch.log(rate), rate, rate

    @staticmethod
    def recurrence(rate: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(k + 1) p_{k+1} = rate p_k``: ``(rate, 0)``, and ``1 - 0``."""
        return rate, torch.zeros_like(rate), torch.ones_like(rate)

    @staticmethod
    def base_measure(k: Tensor, **params) -> Tensor:
        """``h_k = -log k!``."""
        return -torch.lgamma(k + 1.0)

    @classmethod
    def params_from_raw(cls, raw: Tensor, **structural) -> dict[str, Tensor]:
        """``rate = softplus(raw)``, floored at :data:`MIN_RATE`."""
        return {"rate": F.softplus(raw[..., 0]).clamp_min(MIN_RATE)}

    def to_raw(self) -> Tensor:
        """Inverse softplus of the rate."""
        return (self.rate + torch.log(-torch.expm1(-self.rate))).unsqueeze(-1)

    @classmethod
    def untruncated(cls, rate: Tensor | float) -> Poisson:
        return Poisson(rate)
