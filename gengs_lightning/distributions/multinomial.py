"""Multinomial family as a table over its count vectors (NeurIPS Appendix E)."""

from __future__ import annotations

import itertools
import math
from functools import lru_cache
from typing import ClassVar

import torch
from torch import Tensor
from torch.distributions import Distribution, Multinomial, constraints
from torch.distributions.utils import lazy_property, logits_to_probs, probs_to_logits

from gengs_lightning.distributions.binomial import _integer_count
from gengs_lightning.distributions.truncated import DiscreteFamily, _float_tensor


@lru_cache(maxsize=64)
def compositions(total_count: int, num_classes: int) -> tuple[tuple[int, ...], ...]:
    """All count vectors of length ``num_classes`` summing to ``total_count``, in lexicographic order.

    There are ``C(total_count + num_classes - 1, num_classes - 1)`` of them (stars and bars).
    """
    slots = total_count + num_classes - 1
    result = []
    for bars in itertools.combinations(range(slots), num_classes - 1):
        edges = (-1, *bars, slots)
        result.append(tuple(edges[i + 1] - edges[i] - 1 for i in range(num_classes)))
    return tuple(sorted(result, reverse=True))


class TruncatedMultinomial(DiscreteFamily):
    """Multinomial(total_count, probs) as a categorical choice over all its count vectors.

    The outcome table ``c`` holds every count vector (shape ``(n, K)``) and
    ``log pi = log N! - sum_j log c_j! + c @ log probs``; the GenGS sample ``sum_k w_k c_k`` is a
    relaxed count vector (NeurIPS Appendix E). The support is finite, so nothing is folded.

    Args:
        total_count: Number of trials ``N``, one non-negative integer.
        probs: Class probabilities, last dimension ``K`` (give this or ``logits``).
        logits: Unnormalised log-probabilities, last dimension ``K``.
        validate_args: Whether to check the parameters.
    """

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {
        "probs": constraints.simplex,
        "logits": constraints.real_vector,
    }
    family_name = "multinomial"
    structural_params = ("total_count",)
    truncatable = False

    def __init__(
        self,
        total_count: int,
        probs: Tensor | list[float] | None = None,
        logits: Tensor | list[float] | None = None,
        validate_args=None,
    ):
        if (probs is None) == (logits is None):
            raise ValueError(f"give exactly one of probs or logits, got probs={probs!r} and logits={logits!r}")
        if probs is not None:
            self.probs = _float_tensor(probs)
            logits = probs_to_logits(self.probs)
        self.logits = _float_tensor(logits)
        self.total_count = _integer_count(total_count)
        dtype, device = self.logits.dtype, self.logits.device
        table = torch.tensor(compositions(self.total_count, self.logits.shape[-1]), dtype=torch.float64, device=device)
        Distribution.__init__(self, self.logits.shape[:-1], table.shape[1:], validate_args=validate_args)
        log_base = math.lgamma(self.total_count + 1.0) - torch.lgamma(table + 1.0).sum(-1)
        log_pmf = self.logits.double().log_softmax(-1) @ table.T + log_base
        self._set_table(log_pmf.to(dtype), table.to(dtype), None, tail_mass=None)

    @property
    def support(self) -> constraints.Constraint:
        return constraints.multinomial(self.total_count)

    @lazy_property
    def probs(self) -> Tensor:
        return logits_to_probs(self.logits)

    @classmethod
    def params_from_raw(cls, raw: Tensor, total_count: int = 1, **structural) -> dict[str, Tensor]:
        """``logits = raw`` (``K`` outputs per latent dimension) with the prior's ``total_count``."""
        return {"total_count": total_count, "logits": raw}

    def to_raw(self) -> Tensor:
        return self.logits

    @classmethod
    def untruncated(cls, total_count, probs=None, logits=None) -> Multinomial:
        return Multinomial(_integer_count(total_count), probs=probs, logits=logits)

    @classmethod
    def raw_size(cls, probs=None, logits=None, **structural) -> int:
        return torch.as_tensor(probs if probs is not None else logits).shape[-1]
