"""Categorical family as an outcome table (GenGS reduces to Gumbel-Softmax)."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor
from torch.distributions import Categorical, Distribution, OneHotCategorical, constraints
from torch.distributions.utils import lazy_property, logits_to_probs, probs_to_logits

from gengs_lightning.distributions.truncated import DiscreteFamily, _float_tensor
from gengs_lightning.distributions.window import Window


class TruncatedCategorical(DiscreteFamily):
    """Categorical(probs) over ``K`` classes: nothing to truncate, ``n = K``.

    With one-hot outcomes (``c = I_K``) the GenGS sample ``sum_k c_k w_k = w`` is exactly the
    Gumbel-Softmax relaxation (NeurIPS Section 4.2, Appendix E); with index outcomes
    (``c = (0, ..., K - 1)``) it is the relaxed class index.

    Args:
        probs: Class probabilities, last dimension ``K`` (give this or ``logits``).
        logits: Unnormalised log-probabilities, last dimension ``K``.
        one_hot: Whether outcomes are one-hot vectors (event shape ``(K,)``) or indices.
        validate_args: Whether to check the parameters.
    """

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {
        "probs": constraints.simplex,
        "logits": constraints.real_vector,
    }
    family_name = "categorical"
    structural_params = ("one_hot",)
    truncatable = False

    def __init__(
        self,
        probs: Tensor | list[float] | None = None,
        logits: Tensor | list[float] | None = None,
        one_hot: bool = True,
        validate_args=None,
    ):
        if (probs is None) == (logits is None):
            raise ValueError(f"give exactly one of probs or logits, got probs={probs!r} and logits={logits!r}")
        if probs is not None:
            self.probs = _float_tensor(probs)
            logits = probs_to_logits(self.probs)
        self.logits = _float_tensor(logits)
        if self.logits.dim() < 1 or self.logits.shape[-1] < 1:
            raise ValueError(f"a categorical needs at least one class, got logits of shape {self.logits.shape}")
        num_classes = self.logits.shape[-1]
        self.one_hot = bool(one_hot)
        if self.one_hot:
            outcomes, window = torch.eye(num_classes, dtype=self.logits.dtype, device=self.logits.device), None
        else:
            window = Window(0, num_classes - 1)
            outcomes = window.outcomes(self.logits.dtype, self.logits.device)
        Distribution.__init__(self, self.logits.shape[:-1], outcomes.shape[1:], validate_args=validate_args)
        self._set_table(self.logits.log_softmax(-1), outcomes, window, tail_mass=None)

    @property
    def support(self) -> constraints.Constraint:
        return constraints.one_hot if self.one_hot else constraints.integer_interval(0, self.num_outcomes - 1)

    @lazy_property
    def probs(self) -> Tensor:
        return logits_to_probs(self.logits)

    @classmethod
    def params_from_raw(cls, raw: Tensor, one_hot: bool = True, **structural) -> dict[str, Tensor]:
        """``logits = raw`` (``K`` outputs per latent dimension)."""
        return {"logits": raw, "one_hot": one_hot}

    def to_raw(self) -> Tensor:
        return self.logits

    @classmethod
    def untruncated(cls, probs=None, logits=None, one_hot: bool = True) -> Distribution:
        return (OneHotCategorical if one_hot else Categorical)(probs=probs, logits=logits)

    @classmethod
    def raw_size(cls, probs=None, logits=None, **structural) -> int:
        return torch.as_tensor(probs if probs is not None else logits).shape[-1]
