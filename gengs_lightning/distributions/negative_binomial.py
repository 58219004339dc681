"""Truncated negative binomial family."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import NegativeBinomial, constraints
from torch.distributions.utils import lazy_property, logits_to_probs

from gengs_lightning.distributions._bernoulli_params import probs_or_logits
from gengs_lightning.distributions.truncated import TruncatedCount
from gengs_lightning.distributions.window import Window


class TruncatedNegativeBinomial(TruncatedCount):
    """NegativeBinomial(total_count, probs) truncated to a window.

    Successes before ``total_count`` failures, success probability ``probs`` (the
    :class:`torch.distributions.NegativeBinomial` convention):
    ``log p_k = lgamma(k + r) - lgamma(r) - log k! + r log(1 - probs) + k log(probs)``, mean
    ``r probs / (1 - probs)``. ``total_count`` is structural: a prior fixes it and an encoder infers
    ``probs`` only.

    Args:
        total_count: Positive number of failures ``r`` (a real number).
        probs: Success probability in ``[0, 1)`` (give this or ``logits``).
        logits: Log-odds of success.
        window: Truncation level ``n`` or window ``[a, b]``.
        validate_args: Whether to check the parameters.
    """

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {
        "total_count": constraints.positive,
        "probs": constraints.half_open_interval(0.0, 1.0),
        "logits": constraints.real,
    }
    family_name = "negative_binomial"
    structural_params = ("total_count",)

    def __init__(
        self,
        total_count: Tensor | float,
        probs: Tensor | float | None = None,
        logits: Tensor | float | None = None,
        window: Window | int | tuple[int, int] = 1,
        validate_args=None,
    ):
        probs, self.logits = probs_or_logits(probs, logits)
        if probs is not None:
            self.probs = probs
        self.total_count = torch.as_tensor(total_count, dtype=self.logits.dtype, device=self.logits.device)
        if self.total_count.requires_grad:
            raise ValueError(
                "total_count of the negative binomial is structural (fixed by the prior); "
                "gradients with respect to it are not supported, pass a tensor without requires_grad"
            )
        batch_shape = torch.broadcast_shapes(self.total_count.shape, self.logits.shape)
        super().__init__(window, batch_shape, validate_args=validate_args)

    @lazy_property
    def probs(self) -> Tensor:
        return logits_to_probs(self.logits, is_binary=True)

    @property
    def params(self) -> dict[str, Tensor]:
        return {"total_count": self.total_count, "logits": self.logits}

    @staticmethod
    def natural(total_count: Tensor, logits: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``eta = log(probs)``, ``A = -r log(1 - probs)``, mean ``r probs / (1 - probs)``."""
        return F.logsigmoid(logits), -total_count * F.logsigmoid(-logits), total_count * torch.exp(logits)

    @staticmethod
    def recurrence(total_count: Tensor, logits: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(k + 1) p_{k+1} = probs (r + k) p_k``: ``(r probs, probs)``, and ``1 - probs``."""
        probs = torch.sigmoid(logits)
        return total_count * probs, probs, torch.sigmoid(-logits)

    @staticmethod
    def base_measure(k: Tensor, total_count: Tensor, **params) -> Tensor:
        """``h_k = log C(k + r - 1, k)``."""
        return torch.lgamma(k + total_count) - torch.lgamma(total_count) - torch.lgamma(k + 1.0)

    @classmethod
    def params_from_raw(cls, raw: Tensor, total_count: Tensor | float = 1.0, **structural) -> dict[str, Tensor]:
        """``logits = raw`` with the prior's ``total_count``."""
        return {"total_count": total_count, "logits": raw[..., 0]}

    def to_raw(self) -> Tensor:
        return self.logits.unsqueeze(-1)

    @classmethod
    def untruncated(cls, total_count, probs=None, logits=None) -> NegativeBinomial:
        return NegativeBinomial(total_count, probs=probs, logits=logits)
