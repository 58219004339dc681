"""Score-function (REINFORCE-family) estimators: the baselines of the GenGS paper's experiments.

All of them estimate the gradient of ``E_{z ~ q}[f(z)]`` with respect to the encoder output from exact
discrete samples and the score ``grad log q(z)``, with a control variate to reduce the variance
(NeurIPS Section 6, "Baselines"):

* :class:`Reinforce` (Williams 1992): ``(f(z) - b) grad log q(z)`` with an optional moving average ``b``;
* :class:`ReinforceLOO` (the paper's RF*, Kool et al. 2019): ``S`` samples, each one's baseline is the
  mean objective of the others;
* :class:`NVIL` (Mnih & Gregor 2014): a learned, input-dependent baseline and variance normalisation;
* :class:`MuProp` (Gu et al. 2016): the first-order Taylor expansion of ``f`` at the mean as control
  variate, with its expectation added back analytically;
* :class:`VIMCO` (Mnih & Rezende 2016): the ``S``-sample importance-weighted bound with per-sample
  leave-one-out baselines.

**Which distribution they sample from.** The encoder gives the family's parameters exactly as for
:class:`~gengs_lightning.estimators.GenGSExplicit` (``raw_size = prior.raw_size``, e.g.
``rate = softplus(raw)``). By default (``truncation=None``) samples come from the *untruncated* family
(:meth:`Prior.untruncated_posterior`, wrapped in :class:`UntruncatedPosterior`) and the KL is the
closed form between the untruncated posterior and prior (:func:`untruncated_kl`). With a
``truncation`` window they come from the family truncated on it (the table GenGS relaxes) and the
KL is the one between the truncated posterior and the prior truncated on the same window (journal
Proposition 6), so that a comparison with GenGS runs on one support. The argument is named
``truncation`` rather than ``window`` so that swapping a GenGS estimator for one of these on the
command line (``--model.estimator Reinforce``) drops GenGS's window: the baseline then samples the
untruncated family unless given a ``truncation``.

**Surrogates.** The returned ``surrogate`` has the value ``loss.mean()`` (so logs and finiteness checks
read the loss) and the estimator's gradient: the score terms enter as ``x - x.detach()``. The decoder's
gradient is the pathwise ``grad f(z)`` at the samples, the KL's the exact one. In eval mode nothing but
exact samples and the reported loss is computed.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, constraints, kl_divergence

from gengs_lightning.distributions import DiscreteFamily, Prior, TruncatedDiscrete, Window
from gengs_lightning.estimators.base import (
    Estimator,
    EstimatorOutput,
    Objective,
    ParameterRangeError,
    check_window,
    truncation_stats,
)

__all__ = [
    "BASELINES",
    "NVIL",
    "VIMCO",
    "MuProp",
    "Reinforce",
    "ReinforceLOO",
    "ScoreFunctionDraw",
    "ScoreFunctionEstimator",
    "UntruncatedPosterior",
    "untruncated_kl",
]

TruncationArg = int | tuple[int, int] | Literal["auto"] | None
#: Largest mean of an untruncated count posterior that torch's samplers draw from: float64's integer range.
#: Beyond it they return no draws of the family (a Poisson rate of 1e17 gives the rate itself, 1e19 gives
#: -9.2e18, int64's overflow; a negative binomial or geometric with an infinite mean gives NaN or Inf).
MAX_UNTRUNCATED_MEAN = 2.0**53
BaselineKind = Literal["none", "moving_average"]
BASELINES: tuple[str, ...] = ("none", "moving_average")


# --------------------------------------------------------------------------------------------------
# Argument checks
# --------------------------------------------------------------------------------------------------


def _check_decay(decay: float) -> float:
    """A moving-average decay in ``[0, 1)``."""
    if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not (0.0 <= decay < 1.0):
        raise ValueError(f"decay must be a number in [0, 1), got {decay!r}")
    return float(decay)


def _zero_valued(x: Tensor) -> Tensor:
    """``x - x.detach()``: zero in value, the gradient of ``x``."""
    return x - x.detach()


# --------------------------------------------------------------------------------------------------
# The untruncated posterior and its KL
# --------------------------------------------------------------------------------------------------


class UntruncatedPosterior(Distribution):
    """The prior's family, untruncated, with the encoder's parameters (:meth:`Prior.untruncated_posterior`).

    A thin wrapper around the :mod:`torch.distributions` object (:attr:`base`) that samples, scores and
    reports moments through it, and adds what the package's tables offer for exact expectations:
    :meth:`widen` enumerates the distribution on a window holding ``1 - eps`` of its mass (what
    :meth:`ToyTask.exact_loss <gengs_lightning.models.ToyTask.exact_loss>` uses).

    Args:
        raw: Encoder outputs ``(*batch, raw_size)``.
        prior: The prior whose family and structural parameters the posterior takes.
    """

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {}

    def __init__(self, raw: Tensor, prior: Prior):
        self.raw = raw
        self.family: type[DiscreteFamily] = prior.family
        self.structural = dict(prior.structural)
        self.base = prior.untruncated_posterior(raw)
        super().__init__(self.base.batch_shape, self.base.event_shape, validate_args=False)

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

    def expand(self, batch_shape: torch.Size | tuple[int, ...], _instance=None) -> UntruncatedPosterior:
        new = UntruncatedPosterior.__new__(UntruncatedPosterior)
        new.raw = self.raw.expand(torch.Size(batch_shape) + self.raw.shape[-1:])
        new.family, new.structural = self.family, self.structural
        new.base = self.base.expand(batch_shape)
        Distribution.__init__(new, new.base.batch_shape, new.base.event_shape, validate_args=False)
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

    def __repr__(self) -> str:
        return f"UntruncatedPosterior({self.base!r})"


def _as_tensors(params: dict[str, Any], like: Tensor) -> dict[str, Any]:
    """Family parameters with numbers and lists as tensors of ``like``'s dtype (structural ones included)."""
    return {
        name: value if torch.is_tensor(value) else torch.as_tensor(value, dtype=like.dtype, device=like.device)
        for name, value in params.items()
    }


def untruncated_kl(raw: Tensor, prior: Prior) -> Tensor:
    """``KL(q || p)`` between untruncated members of the prior's family, per latent dimension.

    Exact closed forms, stable for saturated parameters:

    * count families (Poisson, geometric, negative binomial, binomial) are exponential families
      ``log p_k = eta k + h_k - A(eta)`` whose base measure ``h`` is fixed by the structural parameters
      the posterior shares with the prior, so ``KL = (eta_q - eta_p) E_q[k] - A(eta_q) + A(eta_p)``
      with the families' own ``natural`` maps (``logsigmoid`` forms, no ``log(1 - probs)``);
    * categorical: ``sum_k q_k (log q_k - log p_k)``; multinomial, a sum of ``N`` independent
      categorical trials: ``N`` times that.

    These equal :func:`torch.distributions.kl_divergence` where torch registers one (Poisson,
    geometric, binomial, categorical, one-hot categorical) and the exact KL by enumeration on a window
    holding ``1 - 1e-12`` of the posterior (negative binomial, multinomial), which the tests check;
    unlike torch's binomial KL they stay finite for saturated probabilities (torch gives ``-inf`` or
    NaN once ``probs`` rounds to one).

    Args:
        raw: Encoder outputs ``(*batch, raw_size)``.
        prior: The prior (any batch shape broadcasting with the posterior's, differentiable or not).

    Returns:
        The KL per latent dimension, shape ``raw.shape[:-1]`` (broadcast with the prior's batch).
    """
    family = prior.family
    if family.truncatable:
        q = _as_tensors(family.params_from_raw(raw, **prior.structural), raw)
        p = prior.truncated(Window(0, 0)).params
        eta_q, log_norm_q, mean_q = family.natural(**q)
        eta_p, log_norm_p, _ = family.natural(**p)
        return (eta_q - eta_p) * mean_q - log_norm_q + log_norm_p
    table = prior.truncated(None)
    log_q = raw.log_softmax(-1)
    log_p = table.logits.log_softmax(-1).to(log_q)
    terms = torch.where(log_q > -math.inf, log_q.exp() * (log_q - log_p), torch.zeros_like(log_q))
    return terms.sum(-1) * getattr(table, "total_count", 1)


# --------------------------------------------------------------------------------------------------
# The shared flow
# --------------------------------------------------------------------------------------------------


@dataclass
class ScoreFunctionDraw:
    """Everything one forward pass has drawn and evaluated, handed to the estimator's hooks.

    Attributes:
        params: Encoder output ``(B, D, raw_size)``.
        objective: The model's objective.
        prior: The prior.
        posterior: ``q(z | x)`` (untruncated wrapper or truncated table).
        sample: Exact samples ``(S, B, D, *event)``, no gradient.
        value: ``objective(sample)``, ``(S, B)``.
        kl: The KL term per example ``(B,)`` (zeros without one).
        use_kl: Whether the loss has a KL term.
        stats: Scalars the hooks want logged (detached).
        cache: Values the hooks share within one pass.
    """

    params: Tensor
    objective: Objective
    prior: Prior
    posterior: Distribution
    sample: Tensor
    value: Tensor
    kl: Tensor
    use_kl: bool
    stats: dict[str, Tensor] = field(default_factory=dict)
    cache: dict[str, Tensor] = field(default_factory=dict)

    @cached_property
    def log_q(self) -> Tensor:
        """``log q(z_s | x)`` summed over latent dimensions, ``(S, B)``, differentiable in ``params``."""
        return self.posterior.log_prob(self.sample).sum(-1)


class ScoreFunctionEstimator(Estimator):
    """Shared flow of the score-function estimators.

    Build ``q(z | x)`` from the encoder output (the family's parameters, as explicit GenGS), draw ``S``
    exact samples, evaluate the objective, add the KL, and form the surrogate
    ``mean_B [loss + (score_term - score_term.detach())]`` whose gradient is the estimate. By default
    the score term is ``mean_S [c_s grad log q(z_s)] + control_term`` with the learning signal ``c_s``
    of :meth:`learning_signal` held constant; subclasses give the signal and, optionally, an
    analytic :meth:`control_term`.

    Sampling and KL:

    * ``truncation=None`` (default): samples from the untruncated family
      (:class:`UntruncatedPosterior`); KL between the untruncated posterior and prior in closed form
      (:func:`untruncated_kl`); :meth:`prior_distribution` is the untruncated prior.
    * ``truncation=n``, ``[a, b]`` or ``"auto"``: samples from the family truncated on that window
      (``"auto"``: the whole support of a finite family, otherwise the smallest window holding
      ``1 - 1e-6`` of the prior), the table GenGS relaxes; KL between the truncated posterior and the
      prior truncated on the same window (journal Proposition 6); :meth:`prior_distribution` is that
      truncated prior. ``stats`` then report ``trunc_n`` and ``trunc_tail_mass`` as GenGS does.

    Args:
        num_samples: Exact samples ``S`` per example.
        truncation: ``None`` for the untruncated family, or the truncation window: a level ``n``, a
            pair ``[a, b]`` or ``"auto"``.

    Raises:
        ValueError: For an invalid ``num_samples`` or ``truncation``, naming the value.
        ParameterRangeError: At run time, without ``truncation``, for an encoder output whose untruncated
            count posterior has a mean above :data:`MAX_UNTRUNCATED_MEAN` (``2**53``) or NaN, which torch's
            samplers cannot draw from; the message names the output, the family parameters and the mean.
    """

    def __init__(self, num_samples: int = 1, truncation: TruncationArg = None):
        super().__init__(num_samples=num_samples)
        if isinstance(truncation, str) and truncation != "auto":
            raise ValueError(f'truncation must be None, a level n >= 2, a pair [a, b] or "auto", got {truncation!r}')
        self.truncated = truncation is not None
        self.window = None if truncation in (None, "auto") else check_window(truncation, "truncation")

    # -- the posterior, the prior and the KL --------------------------------------------------------
    def raw_size(self, prior: Prior) -> int:
        return prior.raw_size

    def posterior(self, params: Tensor, prior: Prior) -> Distribution:
        """The untruncated family (:class:`UntruncatedPosterior`), or its table on the window."""
        if self.truncated:
            return prior.posterior(params, prior.resolve_window(self.window))
        if prior.family.truncatable:
            self._check_samplable(params, prior)
        return UntruncatedPosterior(params, prior)

    def _check_samplable(self, params: Tensor, prior: Prior) -> None:
        """Check that every untruncated count posterior has a mean torch's samplers can draw at.

        Raises:
            ParameterRangeError: Naming the first encoder output whose mean is NaN or above
                :data:`MAX_UNTRUNCATED_MEAN`, its family parameters and mean.
        """
        family_params = _as_tensors(prior.family.params_from_raw(params.detach(), **prior.structural), params)
        mean = prior.family.natural(**family_params)[2]
        bad = ~(mean <= MAX_UNTRUNCATED_MEAN)
        if not bad.any():
            return
        index = tuple(int(i) for i in bad.nonzero()[0])
        shown = ", ".join(
            f"{name}={float(torch.broadcast_to(value, mean.shape)[index]):.4g}" for name, value in family_params.items()
        )
        raise ParameterRangeError(
            f"{type(self).__name__} samples the untruncated {prior.family.family_name} family, whose mean must be at "
            f"most 2**53 = {MAX_UNTRUNCATED_MEAN:.3g} for torch's sampler to draw from it; the encoder output "
            f"{float(params[index][0]):.4g} at {list(index)} gives {shown} (mean {float(mean[index]):.3g}). Lower the "
            "learning rate, bound the encoder output, or give the estimator a truncation window (truncation=n)."
        )

    def prior_distribution(self, posterior: Distribution, prior: Prior) -> Distribution:
        """The untruncated prior, or the prior truncated on the posterior's window."""
        if self.truncated:
            return prior.truncated(posterior.window)
        return prior.untruncated()

    def raw_like(self, prior: Prior) -> Tensor:
        return prior.truncated(prior.resolve_window(self.window)).to_raw()

    def latent_kl(self, params: Tensor, posterior: Distribution, prior: Prior) -> Tensor:
        """``KL(q || p)`` per latent dimension ``(B, D)``: untruncated closed form or truncated tables."""
        if self.truncated:
            return kl_divergence(posterior, prior.truncated(posterior.window))
        return untruncated_kl(params, prior)

    # -- the flow -----------------------------------------------------------------------------------
    def forward(self, params: Tensor, objective: Objective, prior: Prior, kl: bool = True) -> EstimatorOutput:
        self.check_params(params, prior)
        posterior = self.posterior(params, prior)
        batch = params.shape[0]
        sample = posterior.sample((self.num_samples,))
        value = self.check_objective(objective(sample), batch)
        kl_term = self.latent_kl(params, posterior, prior).sum(-1) if kl else value.new_zeros(batch)
        draw = ScoreFunctionDraw(params, objective, prior, posterior, sample, value, kl_term, kl)
        if self.truncated:
            draw.stats.update(truncation_stats(posterior, prior))
        loss = self.loss(draw)
        surrogate = loss.mean()
        if self.training:
            surrogate = surrogate + _zero_valued(self.score_term(draw).mean())
        return EstimatorOutput(
            sample=sample,
            objective=value,
            kl=kl_term,
            loss=loss,
            surrogate=surrogate,
            posterior=posterior,
            stats=draw.stats,
        )

    def loss(self, draw: ScoreFunctionDraw) -> Tensor:
        """The reported loss ``(B,)``: ``mean_S objective + KL`` (its gradient: decoder and KL)."""
        return draw.value.mean(0) + draw.kl

    def score_term(self, draw: ScoreFunctionDraw) -> Tensor:
        """Per-example term ``(B,)`` whose gradient, added to the loss's, is the estimate (training only)."""
        signal = self.learning_signal(draw).detach()
        return (signal * draw.log_q).mean(0) + self.control_term(draw)

    @abstractmethod
    def learning_signal(self, draw: ScoreFunctionDraw) -> Tensor:
        """The coefficient ``c_s`` of ``grad log q(z_s)``, ``(S, B)`` (held constant).

        Called once per training pass; stateful estimators update their state here (training mode
        only, without gradient), after using it.
        """

    def control_term(self, draw: ScoreFunctionDraw) -> Tensor | float:
        """A differentiable per-example term ``(B,)`` added to the score term (default none)."""
        return 0.0

    def extra_repr(self) -> str:
        truncation = (self.window or "auto") if self.truncated else None
        return f"num_samples={self.num_samples}, truncation={truncation}"


# --------------------------------------------------------------------------------------------------
# The estimators
# --------------------------------------------------------------------------------------------------


class Reinforce(ScoreFunctionEstimator):
    """REINFORCE (Williams 1992): surrogate ``(f(z) - b).detach() log q(z) + f(z)`` per sample, plus the KL.

    Samples from the untruncated family and uses the closed-form untruncated KL by default; with
    a ``truncation`` window samples from the family truncated on it and uses the truncated-window KL
    (see :class:`ScoreFunctionEstimator`). The learning signal is the objective alone (the KL's
    gradient is exact).

    The baseline ``b`` is either zero (``"none"``) or a moving average of the batch-mean objective
    over past training steps (``"moving_average"``): ``b <- decay b + (1 - decay) mean f`` after each
    training step, the first step setting ``b`` to its mean. It depends on past batches only, so the
    estimate stays unbiased. It lives in the buffers ``baseline_mean`` and ``baseline_updates`` (saved
    in checkpoints), is updated without gradient and only in training mode, and is logged as
    ``baseline``.

    Args:
        num_samples: Samples per example (their estimates are averaged).
        truncation: ``None`` (untruncated family) or a truncation window (see :class:`ScoreFunctionEstimator`).
        baseline: ``"none"`` or ``"moving_average"``.
        decay: Decay of the moving average, in ``[0, 1)``.

    Raises:
        ValueError: For an unknown ``baseline`` or a ``decay`` outside ``[0, 1)``, naming the value.
    """

    baseline_mean: Tensor
    baseline_updates: Tensor

    def __init__(
        self,
        num_samples: int = 1,
        truncation: TruncationArg = None,
        baseline: BaselineKind = "moving_average",
        decay: float = 0.99,
    ):
        super().__init__(num_samples=num_samples, truncation=truncation)
        if not isinstance(baseline, str) or baseline not in BASELINES:
            raise ValueError(f"baseline must be one of {', '.join(map(repr, BASELINES))}, got {baseline!r}")
        self.baseline = baseline
        self.decay = _check_decay(decay)
        if baseline == "moving_average":
            self.register_buffer("baseline_mean", torch.zeros(()))
            self.register_buffer("baseline_updates", torch.zeros((), dtype=torch.long))

    def learning_signal(self, draw: ScoreFunctionDraw) -> Tensor:
        value = draw.value.detach()
        if self.baseline == "none":
            return value
        baseline = self.baseline_mean.to(value).clone()
        draw.stats["baseline"] = baseline
        if self.training:
            with torch.no_grad():
                batch_mean = value.mean().to(self.baseline_mean)
                moved = self.decay * self.baseline_mean + (1.0 - self.decay) * batch_mean
                self.baseline_mean.copy_(torch.where(self.baseline_updates > 0, moved, batch_mean))
                self.baseline_updates.add_(1)
        return value - baseline

    def extra_repr(self) -> str:
        return f"baseline={self.baseline!r}, decay={self.decay}, {super().extra_repr()}"


class ReinforceLOO(ScoreFunctionEstimator):
    """REINFORCE with leave-one-out baselines, the paper's RF* (Kool et al. 2019, "Buy 4 REINFORCE samples").

    With ``S >= 2`` samples per example, the baseline of sample ``s`` is the mean objective of the other
    ``S - 1``: ``(1/S) sum_s (f_s - mean_{j != s} f_j) grad log q(z_s)``, which equals
    ``1/(S - 1) sum_s (f_s - mean f) grad log q(z_s)``; unbiased because the baseline of a sample does
    not depend on it. Samples from the untruncated family with the closed-form untruncated KL by
    default, from the truncated family with the truncated-window KL with a ``truncation`` window (see
    :class:`ScoreFunctionEstimator`).

    Args:
        num_samples: Samples per example, at least 2.
        truncation: ``None`` (untruncated family) or a truncation window (see :class:`ScoreFunctionEstimator`).

    Raises:
        ValueError: For ``num_samples < 2``, naming the value.
    """

    min_samples = 2  # the baseline of a sample is the mean of the others

    def __init__(self, num_samples: int = 4, truncation: TruncationArg = None):
        super().__init__(num_samples=num_samples, truncation=truncation)

    def learning_signal(self, draw: ScoreFunctionDraw) -> Tensor:
        value = draw.value.detach()
        others = (value.sum(0, keepdim=True) - value) / (value.shape[0] - 1)
        return value - others


class NVIL(ScoreFunctionEstimator):
    """NVIL (Mnih & Gregor 2014): a learned input-dependent baseline and variance normalisation.

    The learning signal of sample ``s`` is ``(f_s - c - b_psi(x)) / max(1, sqrt(v))``:

    * ``b_psi(x)``: the estimator sees only the encoder output, so the baseline network reads
      ``q(z | x)`` (detached): per latent component (each count, or each coordinate of a one-hot or
      count vector) the features ``log(1 + mean)`` and ``log std`` (clamped at ``1e-4``) of the
      posterior, which every family provides, go through a small MLP (``2 -> baseline_hidden -> 1``,
      tanh), summed over components, plus a learned constant. Its output layer starts at zero.
    * ``c`` and ``v``: running mean and variance of the residual ``f - b_psi(x)`` over past training
      steps (decay ``decay``; the first step sets them), in the buffers ``signal_mean``,
      ``signal_var``, ``signal_updates``; updated without gradient, in training mode only. The first
      training step has no statistics to use yet: its score signal is zero and it only sets ``c`` and
      ``v``. (Used unnormalised, that one gradient can be orders of magnitude above the later ones and
      dominate Adam's second-moment average for hundreds of steps: it stalled the toy Poisson task.)

    Both depend on ``x`` and past batches only, so the estimate is unbiased up to the positive factor
    ``1 / max(1, sqrt(v))`` on the score part (NVIL's variance normalisation: the encoder's score
    gradient is rescaled, the KL's and the decoder's are not).

    The baseline's parameters (``estimator.parameters()``) minimise ``(f - c - b_psi(x))^2`` (mean over
    samples and batch): that loss enters the surrogate as a zero-valued term, from detached inputs and
    objective values, so it gives gradient to the baseline only and changes no model parameter's
    gradient. They train with learning rate ``baseline_lr`` in their own optimizer group
    (:meth:`optimizer_options`). Logged: ``baseline_loss`` and ``signal_scale`` (``max(1, sqrt(v))``).

    Samples from the untruncated family with the closed-form untruncated KL by default, from the
    truncated family with the truncated-window KL with a ``truncation`` window (see
    :class:`ScoreFunctionEstimator`).

    Args:
        num_samples: Samples per example.
        truncation: ``None`` (untruncated family) or a truncation window (see :class:`ScoreFunctionEstimator`).
        baseline_hidden: Hidden width of the baseline MLP.
        baseline_lr: Learning rate of the baseline's parameters.
        decay: Decay of the running mean and variance, in ``[0, 1)``.

    Raises:
        ValueError: For ``baseline_hidden < 1``, a non-positive or non-finite ``baseline_lr`` or a
            ``decay`` outside ``[0, 1)``, naming the value.
    """

    signal_mean: Tensor
    signal_var: Tensor
    signal_updates: Tensor

    def __init__(
        self,
        num_samples: int = 1,
        truncation: TruncationArg = None,
        baseline_hidden: int = 16,
        baseline_lr: float = 1e-3,
        decay: float = 0.9,
    ):
        super().__init__(num_samples=num_samples, truncation=truncation)
        if isinstance(baseline_hidden, bool) or not isinstance(baseline_hidden, int) or baseline_hidden < 1:
            raise ValueError(f"baseline_hidden must be an integer >= 1, got {baseline_hidden!r}")
        if isinstance(baseline_lr, bool) or not isinstance(baseline_lr, (int, float)) or not 0 < baseline_lr < math.inf:
            raise ValueError(f"baseline_lr must be a finite number > 0, got {baseline_lr!r}")
        self.baseline_hidden = baseline_hidden
        self.baseline_lr = float(baseline_lr)
        self.decay = _check_decay(decay)
        self.baseline_net = nn.Sequential(
            nn.Linear(2, baseline_hidden), nn.Tanh(), nn.Linear(baseline_hidden, 1, bias=False)
        )
        nn.init.zeros_(self.baseline_net[-1].weight)
        self.baseline_constant = nn.Parameter(torch.zeros(()))
        self.register_buffer("signal_mean", torch.zeros(()))
        self.register_buffer("signal_var", torch.zeros(()))
        self.register_buffer("signal_updates", torch.zeros((), dtype=torch.long))

    def optimizer_options(self) -> dict[str, Any]:
        return {"lr": self.baseline_lr}

    @staticmethod
    def features(posterior: Distribution) -> Tensor:
        """``(B, M, 2)`` detached features ``[log(1 + mean), log std]`` of the ``M`` latent components."""
        with torch.no_grad():
            batch = posterior.batch_shape[0]
            mean = posterior.mean.reshape(batch, -1)
            log_std = 0.5 * posterior.variance.reshape(batch, -1).clamp_min(1e-8).log()
            return torch.stack([mean.clamp_min(0).log1p(), log_std], -1)

    def baseline(self, posterior: Distribution) -> Tensor:
        """The learned part of the baseline ``b_psi(x)``, ``(B,)``, differentiable in its parameters only."""
        features = self.features(posterior).to(self.baseline_constant)
        return self.baseline_net(features).squeeze(-1).sum(-1) + self.baseline_constant

    def learning_signal(self, draw: ScoreFunctionDraw) -> Tensor:
        value = draw.value.detach()
        learned = self.baseline(draw.posterior).to(value)
        draw.cache["baseline"] = learned
        centre = self.signal_mean.to(value)
        scale = self.signal_var.to(value).sqrt().clamp_min(1.0)
        residual = value - learned.detach()
        draw.stats["signal_scale"] = scale.clone()
        warmed_up = (self.signal_updates > 0).to(value)  # before this step's update
        if self.training:
            with torch.no_grad():
                batch_mean = residual.mean().to(self.signal_mean)
                batch_var = residual.var(unbiased=False).to(self.signal_var)
                first = self.signal_updates == 0
                new_mean = torch.where(first, batch_mean, self.decay * self.signal_mean + (1 - self.decay) * batch_mean)
                new_var = torch.where(first, batch_var, self.decay * self.signal_var + (1 - self.decay) * batch_var)
                self.signal_mean.copy_(new_mean)
                self.signal_var.copy_(new_var)
                self.signal_updates.add_(1)
        return warmed_up * (residual - centre) / scale

    def control_term(self, draw: ScoreFunctionDraw) -> Tensor:
        """The baseline's regression loss ``mean_S (f - c - b_psi(x))^2`` per example (zero-valued in the surrogate)."""
        value = draw.value.detach()
        centre = self.signal_mean.to(value)  # already updated: the target of the next steps
        loss = self._baseline_loss(value, centre, draw.cache["baseline"])
        draw.stats["baseline_loss"] = loss.detach().mean()
        return loss

    def _baseline_loss(self, value: Tensor, centre: Tensor, learned: Tensor) -> Tensor:
        return (value - centre - learned).square().mean(0)

    def extra_repr(self) -> str:
        return (
            f"baseline_hidden={self.baseline_hidden}, baseline_lr={self.baseline_lr}, decay={self.decay}, "
            + super().extra_repr()
        )


class MuProp(ScoreFunctionEstimator):
    """MuProp (Gu et al. 2016): the first-order Taylor expansion of ``f`` at the mean as control variate.

    With ``z_bar = E_q[z]`` (held constant) and ``h(z) = f(z_bar) + f'(z_bar) . (z - z_bar)``, the
    estimate is ``[f(z) - h(z)] grad log q(z) + f'(z_bar) . grad E_q[z]``: the score term of the
    residual plus the control variate's expectation differentiated analytically through the encoder
    (``E_q[z]`` is the untruncated family's mean, or the table's mean with a ``truncation`` window);
    unbiased for any ``z_bar`` that does not depend on the samples. The decoder gets ``grad f(z)`` at
    the samples. Costs one more objective evaluation (at ``z_bar``, shape ``(1, B, D, *event)``, so the
    objective must accept real-valued latents) and its derivative in ``z``. Samples from the
    untruncated family with the closed-form untruncated KL by default, from the truncated family with
    the truncated-window KL with a ``truncation`` window (see :class:`ScoreFunctionEstimator`).

    Args:
        num_samples: Samples per example.
        truncation: ``None`` (untruncated family) or a truncation window (see :class:`ScoreFunctionEstimator`).

    Raises:
        ValueError: In ``forward``, if the objective at the mean does not return ``(1, B)``.
    """

    def learning_signal(self, draw: ScoreFunctionDraw) -> Tensor:
        mean = draw.posterior.mean  # (B, D, *event), differentiable in params
        draw.cache["mean"] = mean
        with torch.enable_grad():
            point = mean.detach().unsqueeze(0).requires_grad_()
            at_mean = draw.objective(point)
            expected = (1, draw.params.shape[0])
            if tuple(at_mean.shape) != expected:
                raise ValueError(
                    f"MuProp evaluates objective(z) at the posterior mean, one sample per example: it must "
                    f"return {expected}, got {tuple(at_mean.shape)}"
                )
            slope = None
            if at_mean.requires_grad:
                (slope,) = torch.autograd.grad(at_mean.sum(), point, allow_unused=True)
        slope = torch.zeros_like(point) if slope is None else slope.detach()
        draw.cache["slope"] = slope[0]
        linear = ((draw.sample - point.detach()) * slope).flatten(2).sum(-1)  # (S, B)
        return draw.value.detach() - at_mean.detach() - linear

    def control_term(self, draw: ScoreFunctionDraw) -> Tensor:
        """``f'(z_bar) . E_q[z]`` per example, differentiable through the posterior's mean."""
        return (draw.cache["slope"] * draw.cache["mean"]).flatten(1).sum(-1)


class VIMCO(ScoreFunctionEstimator):
    """VIMCO (Mnih & Rezende 2016): the multi-sample bound with leave-one-out baselines.

    With ``S >= 2`` samples and importance weights ``log w_s = -f(z_s) + log p(z_s) - log q(z_s)``
    (``kl=True``; ``-f(z_s)`` with ``kl=False``, the toy task's ``log mean exp(-f)``), the bound is
    ``L = log (1/S) sum_s w_s`` and the estimate of its gradient is
    ``sum_s [L - L_{-s}] grad log q(z_s) + sum_s w~_s grad log w_s``, where ``w~`` are the normalised
    weights and ``L_{-s}`` replaces ``w_s`` by the geometric mean of the others. The reported ``loss``
    is the negative bound ``-L`` (in eval mode too), so it is not ``objective.mean(0) + kl``; ``kl``
    is the analytic KL (untruncated closed form, or truncated-window KL with a ``truncation`` window), for
    information only: it is not part of the loss or its gradient. ``p`` is
    :meth:`prior_distribution`: the untruncated prior by default, the prior truncated on the window
    with a ``truncation`` window (samples from the untruncated or truncated family accordingly).

    Args:
        num_samples: Samples per example, at least 2.
        truncation: ``None`` (untruncated family) or a truncation window (see :class:`ScoreFunctionEstimator`).

    Raises:
        ValueError: For ``num_samples < 2``, naming the value.
    """

    min_samples = 2  # the baseline of a sample is the mean of the others

    def __init__(self, num_samples: int = 5, truncation: TruncationArg = None):
        super().__init__(num_samples=num_samples, truncation=truncation)

    def log_weights(self, draw: ScoreFunctionDraw) -> Tensor:
        """``log w_s`` ``(S, B)``, differentiable in the encoder output and the objective's parameters."""
        if "log_w" not in draw.cache:
            log_w = -draw.value
            if draw.use_kl:
                prior = self.prior_distribution(draw.posterior, draw.prior)
                log_w = log_w + prior.log_prob(draw.sample).sum(-1) - draw.log_q
            draw.cache["log_w"] = log_w
        return draw.cache["log_w"]

    def loss(self, draw: ScoreFunctionDraw) -> Tensor:
        """The negative bound ``-log (1/S) sum_s w_s`` per example; its gradient is the weighted part."""
        return math.log(self.num_samples) - self.log_weights(draw).logsumexp(0)

    def learning_signal(self, draw: ScoreFunctionDraw) -> Tensor:
        """``-(L - L_{-s})`` (a loss's signal: the surrogate minimises ``-L``), ``(S, B)``."""
        log_w = self.log_weights(draw).detach()
        num = log_w.shape[0]
        bound = log_w.logsumexp(0)
        others = (log_w.sum(0, keepdim=True) - log_w) / (num - 1)  # log geometric mean of the others
        replaced = log_w.unsqueeze(0).repeat(num, 1, 1)  # [s, j, b]
        index = torch.arange(num, device=log_w.device)
        replaced[index, index] = others
        return replaced.logsumexp(1) - bound

    def score_term(self, draw: ScoreFunctionDraw) -> Tensor:
        """``sum_s`` (not the mean) of the signals times the scores."""
        return (self.learning_signal(draw).detach() * draw.log_q).sum(0)
