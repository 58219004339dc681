"""The prior's family without truncation: what the score-function estimators sample, and its closed-form KL.

:class:`UntruncatedPosterior` is the family with the encoder's parameters, :class:`UntruncatedPrior` the
prior itself; both wrap the :mod:`torch.distributions` object (``base``) and carry what the KL between
two members of one family needs, so ``kl_divergence(posterior, prior)`` is the exact closed form
(:func:`kl_untruncated`, registered with :func:`torch.distributions.kl.register_kl`).
"""

from __future__ import annotations

import copy
import math
from typing import Any, ClassVar

import torch
from torch import Tensor
from torch.distributions import Distribution, constraints, register_kl
from torch.distributions.utils import lazy_property

from gengs_lightning.distributions.prior import Prior
from gengs_lightning.distributions.truncated import DiscreteFamily, TruncatedDiscrete
from gengs_lightning.distributions.window import Window


def family_tensors(params: dict[str, Any], like: Tensor) -> dict[str, Any]:
    """Family parameters with numbers and lists as tensors of ``like``'s dtype (structural ones included)."""
    return {
        name: value if torch.is_tensor(value) else torch.as_tensor(value, dtype=like.dtype, device=like.device)
        for name, value in params.items()
    }


class Untruncated(Distribution):
    """A member of one of the package's families, untruncated: a thin wrapper around ``base``.

    Samples, scores and reports moments through the :mod:`torch.distributions` object. Subclasses say
    what the KL needs: :attr:`natural_params` (count families, the arguments of the family's
    ``natural``), or :attr:`logits` and :attr:`total_count` (categorical and multinomial).

    Args:
        family: The family.
        structural: Its structural parameters (e.g. a binomial's ``total_count``).
        base: The untruncated :mod:`torch.distributions` object.
    """

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {}

    def __init__(self, family: type[DiscreteFamily], structural: dict[str, Any], base: Distribution):
        self.family = family
        self.structural = dict(structural)
        self.base = base
        super().__init__(base.batch_shape, base.event_shape, validate_args=False)

    natural_params: dict[str, Tensor]
    logits: Tensor
    total_count: int | Tensor

    @property
    def has_enumerate_support(self) -> bool:  # type: ignore[override]
        return self.base.has_enumerate_support

    @property
    def support(self) -> constraints.Constraint:
        return self.base.support

    @property
    def mean(self) -> Tensor:
        return self.base.mean

    @property
    def mode(self) -> Tensor:
        return self.base.mode

    @property
    def variance(self) -> Tensor:
        return self.base.variance

    def sample(self, sample_shape: torch.Size | tuple[int, ...] = torch.Size()) -> Tensor:
        """Exact draws of the untruncated family (no gradient)."""
        return self.base.sample(torch.Size(sample_shape))

    def log_prob(self, value: Tensor) -> Tensor:
        return self.base.log_prob(value)

    def entropy(self) -> Tensor:
        return self.base.entropy()

    def enumerate_support(self, expand: bool = True) -> Tensor:
        return self.base.enumerate_support(expand)

    def expand(self, batch_shape: torch.Size | tuple[int, ...], _instance=None) -> Untruncated:
        new = copy.copy(self)
        new.base = self.base.expand(batch_shape)
        Distribution.__init__(new, new.base.batch_shape, new.base.event_shape, validate_args=False)
        return new

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base!r})"


class UntruncatedPosterior(Untruncated):
    """The prior's family, untruncated, with the encoder's parameters (:meth:`Prior.untruncated_posterior`).

    Besides the wrapper's sampling and scoring, :meth:`widen` enumerates the distribution on a window
    holding ``1 - eps`` of its mass, for exact expectations (what
    :meth:`ToyTask.exact_loss <gengs_lightning.models.ToyTask.exact_loss>` uses).

    Args:
        raw: Encoder outputs ``(*batch, raw_size)``.
        prior: The prior whose family and structural parameters the posterior takes.
    """

    def __init__(self, raw: Tensor, prior: Prior):
        self.raw = raw
        super().__init__(prior.family, prior.structural, prior.untruncated_posterior(raw))

    @lazy_property
    def natural_params(self) -> dict[str, Tensor]:
        """The family's parameters from ``raw``, numbers as tensors (differentiable in ``raw``)."""
        return family_tensors(self.family.params_from_raw(self.raw, **self.structural), self.raw)

    @property
    def logits(self) -> Tensor:
        """The category logits (categorical and multinomial): the encoder output itself."""
        return self.raw

    def expand(self, batch_shape: torch.Size | tuple[int, ...], _instance=None) -> UntruncatedPosterior:
        new = super().expand(batch_shape)
        new.raw = self.raw.expand(torch.Size(batch_shape) + self.raw.shape[-1:])
        new.__dict__.pop("natural_params", None)
        return new

    def widen(self, eps: float = 1e-12, max_size: int = 100_000) -> TruncatedDiscrete:
        """The family as a table: count families on a window holding ``1 - eps``, finite ones whole.

        Differentiable in the encoder output. The window covers every batch member (see
        :meth:`TruncatedDiscrete.widen`), so it is memory-hungry for big batches; it is meant for exact
        expectations in tests and gradient statistics.
        """
        if self.family.truncatable:
            table = self.family.from_raw(self.raw, Window(0, 0), **self.structural)
            return table.widen(eps, max_size)
        return self.family.from_raw(self.raw, None, **self.structural)


class UntruncatedPrior(Untruncated):
    """The prior itself, untruncated (:meth:`Prior.untruncated`), as the KL partner of an :class:`UntruncatedPosterior`.

    Args:
        prior: The prior.
    """

    def __init__(self, prior: Prior):
        self.prior = prior
        super().__init__(prior.family, prior.structural, prior.untruncated())

    @property
    def natural_params(self) -> dict[str, Tensor]:
        """The prior's parameters as its tables hold them."""
        return self.prior.truncated(Window(0, 0)).params

    @property
    def logits(self) -> Tensor:
        return self.prior.truncated(None).logits

    @property
    def total_count(self) -> int | Tensor:
        """Trials of a multinomial (1 for a categorical)."""
        return getattr(self.prior.truncated(None), "total_count", 1)


@register_kl(Untruncated, Untruncated)
def kl_untruncated(q: Untruncated, p: Untruncated) -> Tensor:
    """``KL(q || p)`` between untruncated members of one family, per latent dimension; exact and stable.

    * Count families (Poisson, geometric, negative binomial, binomial) are exponential families
      ``log p_k = eta k + h_k - A(eta)`` whose base measure ``h`` is fixed by the structural parameters
      the two share, so ``KL = (eta_q - eta_p) E_q[k] - A(eta_q) + A(eta_p)`` with the families' own
      ``natural`` maps (``logsigmoid`` forms, no ``log(1 - probs)``).
    * Categorical: ``sum_k q_k (log q_k - log p_k)``; multinomial, a sum of ``N`` independent categorical
      trials: ``N`` times that.

    These equal :func:`torch.distributions.kl_divergence` where torch registers one (Poisson, geometric,
    binomial, categorical, one-hot categorical) and the exact KL by enumeration (negative binomial,
    multinomial); unlike torch's binomial KL they stay finite for saturated probabilities (torch gives
    ``-inf`` or NaN once ``probs`` rounds to one).

    Raises:
        ValueError: If the two are of different families.
    """
    family = q.family
    if p.family is not family:
        raise ValueError(f"KL between untruncated members of two families: {family.__name__} and {p.family.__name__}")
    if family.truncatable:
        eta_q, log_norm_q, mean_q = family.natural(**q.natural_params)
        eta_p, log_norm_p, _ = family.natural(**p.natural_params)
        return (eta_q - eta_p) * mean_q - log_norm_q + log_norm_p
    log_q = q.logits.log_softmax(-1)
    log_p = p.logits.log_softmax(-1).to(log_q)
    terms = torch.where(log_q > -math.inf, log_q.exp() * (log_q - log_p), torch.zeros_like(log_q))
    return terms.sum(-1) * p.total_count


def untruncated_kl(raw: Tensor, prior: Prior) -> Tensor:
    """``KL(q || p)`` of :func:`kl_untruncated` for the posterior with encoder outputs ``raw`` and the prior.

    Args:
        raw: Encoder outputs ``(*batch, raw_size)``.
        prior: The prior (any batch shape broadcasting with the posterior's, differentiable or not).

    Returns:
        The KL per latent dimension, shape ``raw.shape[:-1]`` (broadcast with the prior's batch).
    """
    return kl_untruncated(UntruncatedPosterior(raw, prior), UntruncatedPrior(prior))
