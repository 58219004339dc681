"""Score-function (REINFORCE-family) estimators: the baselines of the GenGS paper's experiments.

All of them estimate the gradient of ``E_{z ~ q}[f(z)]`` with respect to the encoder output from exact
discrete samples and the score ``grad log q(z)``, with a control variate to reduce the variance
(NeurIPS Section 6, "Baselines"):

* :class:`Reinforce` (Williams 1992): ``(f(z) - b) grad log q(z)`` with an optional moving average ``b``;
* :class:`ReinforceLOO` (the paper's RF*, Kool et al. 2019): ``S`` samples, each one's baseline is the
  mean objective of the others;
* :class:`VIMCO` (Mnih & Rezende 2016): the ``S``-sample importance-weighted bound with per-sample
  leave-one-out baselines.

NVIL and MuProp, whose baselines are learned or analytic control variates, are built on the same flow in
:mod:`~gengs_lightning.estimators.control_variates`.

**Which distribution they sample from.** The encoder gives the family's parameters exactly as for
:class:`~gengs_lightning.estimators.GenGSExplicit` (``raw_size = prior.raw_size``, e.g.
``rate = softplus(raw)``). By default (``truncation=None``) samples come from the *untruncated* family
(:class:`~gengs_lightning.distributions.UntruncatedPosterior`) and the KL is the closed form between
the untruncated posterior and prior (:func:`~gengs_lightning.distributions.kl_untruncated`). With a
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
from typing import Literal

import torch
from torch import Tensor
from torch.distributions import Distribution, kl_divergence

from gengs_lightning.checks import check_choice, check_number
from gengs_lightning.distributions import Prior, UntruncatedPosterior, UntruncatedPrior
from gengs_lightning.distributions.untruncated import family_tensors
from gengs_lightning.estimators.base import EstimatorOutput, Objective, ParameterRangeError
from gengs_lightning.estimators.registry import register
from gengs_lightning.estimators.windowed import WindowedEstimator, check_window, truncation_stats

__all__ = [
    "BASELINES",
    "VIMCO",
    "Reinforce",
    "ReinforceLOO",
    "ScoreFunctionDraw",
    "ScoreFunctionEstimator",
    "check_decay",
]

TruncationArg = int | tuple[int, int] | Literal["auto"] | None
#: Largest mean of an untruncated count posterior that torch's samplers draw from: float64's integer range.
#: Beyond it they return no draws of the family (a Poisson rate of 1e17 gives the rate itself, 1e19 gives
#: -9.2e18, int64's overflow; a negative binomial or geometric with an infinite mean gives NaN or Inf).
MAX_UNTRUNCATED_MEAN = 2.0**53
BaselineKind = Literal["none", "moving_average"]
BASELINES: tuple[str, ...] = ("none", "moving_average")


def check_decay(decay: float) -> float:
    """A moving-average decay in ``[0, 1)``, as a float."""
    return float(check_number("decay", decay, 0, 1, low_closed=True))


def _zero_valued(x: Tensor) -> Tensor:
    """``x - x.detach()``: zero in value, the gradient of ``x``."""
    return x - x.detach()


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


class ScoreFunctionEstimator(WindowedEstimator):
    """Shared flow of the score-function estimators.

    Build ``q(z | x)`` from the encoder output (the family's parameters, as explicit GenGS), draw ``S``
    exact samples, evaluate the objective, add the KL, and form the surrogate
    ``mean_B [loss + (score_term - score_term.detach())]`` whose gradient is the estimate. By default
    the score term is ``mean_S [c_s grad log q(z_s)] + control_term`` with the learning signal ``c_s``
    of :meth:`learning_signal` held constant; subclasses give the signal and, optionally, an
    analytic :meth:`control_term`.

    Sampling and KL:

    * ``truncation=None`` (default): samples from the untruncated family
      (:class:`~gengs_lightning.distributions.UntruncatedPosterior`); KL between the untruncated posterior
      and prior in closed form (:func:`~gengs_lightning.distributions.kl_untruncated`);
      :meth:`prior_distribution` is the untruncated prior
      (:class:`~gengs_lightning.distributions.UntruncatedPrior`).
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

    unbiased = True

    @classmethod
    def examples(cls) -> tuple[dict, ...]:
        return ({}, {"truncation": "auto"})

    def __init__(self, num_samples: int = 1, truncation: TruncationArg = None):
        if isinstance(truncation, str) and truncation != "auto":
            raise ValueError(f'truncation must be None, a level n >= 2, a pair [a, b] or "auto", got {truncation!r}')
        window = None if truncation in (None, "auto") else check_window(truncation, "truncation")
        super().__init__(window=window, num_samples=num_samples)
        self.truncated = truncation is not None

    # -- the posterior, the prior and the KL --------------------------------------------------------
    def posterior(self, params: Tensor, prior: Prior) -> Distribution:
        """The untruncated family (:class:`UntruncatedPosterior`), or its table on the window."""
        if self.truncated:
            return super().posterior(params, prior)
        if prior.family.truncatable:
            self._check_samplable(params, prior)
        return UntruncatedPosterior(params, prior)

    def _check_samplable(self, params: Tensor, prior: Prior) -> None:
        """Check that every untruncated count posterior has a mean torch's samplers can draw at.

        Raises:
            ParameterRangeError: Naming the first encoder output whose mean is NaN or above
                :data:`MAX_UNTRUNCATED_MEAN`, its family parameters and mean.
        """
        family_params = family_tensors(prior.family.params_from_raw(params.detach(), **prior.structural), params)
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
            return super().prior_distribution(posterior, prior)
        return UntruncatedPrior(prior)

    def latent_kl(self, params: Tensor, posterior: Distribution, prior: Prior) -> Tensor:
        """``KL(q || p)`` per latent dimension ``(B, D)``: untruncated closed form or truncated tables."""
        return kl_divergence(posterior, self.prior_distribution(posterior, prior))

    # -- the flow -----------------------------------------------------------------------------------
    def forward(self, params: Tensor, objective: Objective, prior: Prior, kl: bool = True) -> EstimatorOutput:
        self.check_params(params, prior)
        posterior = self.posterior(params, prior)
        sample = posterior.sample((self.num_samples,))
        value = self.check_objective(objective(sample), params.shape[0])
        kl_term = self.kl_term(posterior, self.prior_distribution(posterior, prior), kl, params)
        draw = ScoreFunctionDraw(params, objective, prior, posterior, sample, value, kl_term, kl)
        if self.truncated:
            draw.stats.update(truncation_stats(posterior, prior))
        loss = self.loss(draw)
        surrogate = loss.mean()
        if self.training:
            surrogate = surrogate + _zero_valued(self.score_term(draw).mean())
        return EstimatorOutput(sample, value, kl_term, loss, surrogate, posterior, draw.stats)

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


@register
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

    @classmethod
    def examples(cls) -> tuple[dict, ...]:
        return ({}, {"baseline": "none"}, {"truncation": "auto"})

    def __init__(
        self,
        num_samples: int = 1,
        truncation: TruncationArg = None,
        baseline: BaselineKind = "moving_average",
        decay: float = 0.99,
    ):
        super().__init__(num_samples=num_samples, truncation=truncation)
        self.baseline = check_choice("baseline", baseline, BASELINES)
        self.decay = check_decay(decay)
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


@register
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


@register
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
    unbiased = False  # for its multi-sample bound, not for E_q f + KL

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
