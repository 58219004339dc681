"""Truncated geometric family."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import Geometric, constraints
from torch.distributions.utils import lazy_property, logits_to_probs

from gengs_lightning.distributions._bernoulli_params import probs_or_logits
from gengs_lightning.distributions.truncated import TruncatedCount
from gengs_lightning.distributions.window import Window


class TruncatedGeometric(TruncatedCount):
    """Geometric(probs) truncated to a window: failures before the first success.

    ``p_k = (1 - probs)^k probs`` on ``k = 0, 1, ...`` (the :class:`torch.distributions.Geometric`
    convention, mean ``(1 - probs) / probs``), so Geom(.25) has mean 3 as in the paper's VAE priors.

    Args:
        probs: Success probability in ``(0, 1]`` (give this or ``logits``).
        logits: Log-odds of success.
        window: Truncation level ``n`` or window ``[a, b]``.
        validate_args: Whether to check the parameters.
    """

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {
        "probs": constraints.unit_interval,
        "logits": constraints.real,
    }
    family_name = "geometric"

    def __init__(
        self,
        probs: Tensor | float | None = None,
        logits: Tensor | float | None = None,
        window: Window | int | tuple[int, int] = 1,
        validate_args=None,
    ):
        probs, self.logits = probs_or_logits(probs, logits)
        if probs is not None:
            self.probs = probs
        super().__init__(window, self.logits.shape, validate_args=validate_args)

    @lazy_property
    def probs(self) -> Tensor:
        return logits_to_probs(self.logits, is_binary=True)

    @property
    def params(self) -> dict[str, Tensor]:
        return {"logits": self.logits}

    @staticmethod
    def natural(logits: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``eta = log(1 - probs)``, ``A = -log(probs)``, mean ``(1 - probs) / probs``."""
        return F.logsigmoid(-logits), -F.logsigmoid(logits), torch.exp(-logits)

    @staticmethod
    def recurrence(logits: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``p_{k+1} = (1 - probs) p_k``: ``(1 - probs, 1 - probs)``, and ``probs``."""
        failure = torch.sigmoid(-logits)
        return failure, failure, torch.sigmoid(logits)

    @staticmethod
    def base_measure(k: Tensor, **params) -> Tensor:
        """``h_k = 0``."""
        return torch.zeros_like(k)

    @classmethod
    def params_from_raw(cls, raw: Tensor, **structural) -> dict[str, Tensor]:
        """``logits = raw``."""
        return {"logits": raw[..., 0]}

    def to_raw(self) -> Tensor:
        return self.logits.unsqueeze(-1)

    @classmethod
    def untruncated(cls, probs=None, logits=None) -> Geometric:
        return Geometric(probs=probs, logits=logits)
