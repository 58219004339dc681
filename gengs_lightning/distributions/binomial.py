"""Truncated binomial family."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import Binomial, constraints
from torch.distributions.utils import lazy_property, logits_to_probs

from gengs_lightning.distributions._bernoulli_params import probs_or_logits
from gengs_lightning.distributions.truncated import TruncatedCount
from gengs_lightning.distributions.window import Window


def _integer_count(total_count: Tensor | int) -> int:
    value = torch.as_tensor(total_count)
    if value.dim() > 0 or (value.is_floating_point() and value != value.round()) or value < 0:
        raise ValueError(f"total_count must be one non-negative integer, got {total_count!r}")
    return int(value)


class TruncatedBinomial(TruncatedCount):
    """Binomial(total_count, probs), optionally truncated to a sub-window of ``[0, total_count]``.

    Its support is finite, so without a window it is exact; a narrower window ignores rare outcomes
    (NeurIPS Section 3.1). ``total_count`` is structural; an encoder infers ``probs``.

    Args:
        total_count: Number of trials, one non-negative integer.
        probs: Success probability in ``[0, 1]`` (give this or ``logits``).
        logits: Log-odds of success.
        window: Truncation level or window inside ``[0, total_count]``; ``None`` for the whole support.
        validate_args: Whether to check the parameters.
    """

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {
        "probs": constraints.unit_interval,
        "logits": constraints.real,
    }
    family_name = "binomial"
    structural_params = ("total_count",)

    def __init__(
        self,
        total_count: int,
        probs: Tensor | float | None = None,
        logits: Tensor | float | None = None,
        window: Window | int | tuple[int, int] | None = None,
        validate_args=None,
    ):
        probs, self.logits = probs_or_logits(probs, logits)
        if probs is not None:
            self.probs = probs
        self.total_count = _integer_count(total_count)
        if window is None:
            window = self.support_window(total_count=self.total_count)
        super().__init__(window, self.logits.shape, validate_args=validate_args)

    @lazy_property
    def probs(self) -> Tensor:
        return logits_to_probs(self.logits, is_binary=True)

    @property
    def params(self) -> dict[str, Tensor]:
        return {"total_count": self.total_count, "logits": self.logits}

    def _check_window(self, window: Window) -> None:
        if window.high > self.total_count:
            raise ValueError(
                f"window {window} exceeds the binomial support [0, {self.total_count}]: "
                f"use a window inside it or None for the whole support"
            )

    @staticmethod
    def natural(total_count: int, logits: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``eta = logit(probs)``, ``A = -N log(1 - probs)``, mean ``N probs``."""
        return logits, -total_count * F.logsigmoid(-logits), total_count * torch.sigmoid(logits)

    @staticmethod
    def recurrence(total_count: int, logits: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(k + 1) p_{k+1} = odds (N - k) p_k``, ``odds = probs / (1 - probs)``: ``(N odds, -odds)``, ``1 + odds``."""
        odds = torch.exp(logits)
        return total_count * odds, -odds, 1.0 + odds

    @staticmethod
    def base_measure(k: Tensor, total_count: int, **params) -> Tensor:
        """``h_k = log C(N, k)`` (``-inf`` beyond ``N``)."""
        return math.lgamma(total_count + 1.0) - torch.lgamma(k + 1.0) - torch.lgamma(total_count - k + 1.0)

    @classmethod
    def params_from_raw(cls, raw: Tensor, total_count: int = 1, **structural) -> dict[str, Tensor]:
        """``logits = raw`` with the prior's ``total_count``."""
        return {"total_count": total_count, "logits": raw[..., 0]}

    def to_raw(self) -> Tensor:
        return self.logits.unsqueeze(-1)

    @classmethod
    def untruncated(cls, total_count, probs=None, logits=None) -> Binomial:
        return Binomial(total_count, probs=probs, logits=logits)

    @classmethod
    def support_window(cls, total_count: int = 1, **structural) -> Window:
        return Window(0, _integer_count(total_count))
