"""Score-function estimators with control variates: NVIL and MuProp, REBAR and RELAX.

:class:`NVIL` (a learned input-dependent baseline) and :class:`MuProp` (a Taylor expansion of the objective)
are score-function estimators on the flow of :class:`~gengs_lightning.estimators.ScoreFunctionEstimator`.

REBAR and RELAX are unbiased score-function estimators with relaxed, learned control variates.

Both work on the truncated categorical representation of the latent (the table ``(c, log pi)`` of the
prior's family on a window, as :class:`~gengs_lightning.estimators.GenGSExplicit` builds it) and share
one flow (Tucker et al. 2017, Section 3; Grathwohl et al. 2018, Section 3.3). Per latent dimension,
with ``u, v ~ U(0, 1)^n``:

* ``z = log pi + g(u)``: Gumbel-perturbed scores, ``g(u) = -log(-log u)``;
* ``b = argmax z``: an exact draw of the truncated table (Gumbel-max), the sample the objective is
  reported at;
* ``z~ ~ p(z | b)``: the scores conditioned on their argmax being ``b`` (:func:`conditional_gumbel`);
* ``sigma_lambda(s) = sum_k c_k softmax(s / lambda)_k``: the relaxed value of scores ``s`` at the
  control variate's temperature ``lambda`` (the GenGS map, NeurIPS Theorem 4).

With a control variate ``c(s)`` of the scores and ``f = objective``, the estimate of the gradient of
``E_{b ~ table}[f(b)]`` is::

    [f(b) - c(z~)] grad log pi_b + grad c(z) - grad c(z~)

(derivatives through the reparameterised ``z`` and ``z~``), unbiased for any ``c`` because ``z~`` given
``b``, with ``b`` drawn from the table, has the law of ``z``. REBAR uses ``c(s) = eta f(sigma_lambda(s))``,
RELAX ``c(s) = f(sigma_lambda(s)) + r_psi(s)`` with a small network ``r_psi``.

The control variate's parameters (``eta``, ``log lambda``, ``psi``) minimise the variance of the
estimate with respect to the encoder output: every training step computes the estimate ``g`` with
respect to a detached copy of the encoder output (``create_graph=True``), the objective
``mean_batch sum g^2`` (whose gradient in those parameters is that of the variance, the estimator
being unbiased) and its gradient with respect to the estimator's parameters only, and delivers that
gradient through :func:`~gengs_lightning.estimators.base.inject_gradients`. The surrogate gives model
parameters exactly the estimator's gradient (encoder: the estimate above plus the closed-form KL;
decoder: ``grad f(b)``) and the estimator's parameters nothing but the variance gradient. They form
their own optimizer parameter group with :meth:`optimizer_options` (their learning rate), so models do
not know about them.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from gengs_lightning.checks import check_int, check_number
from gengs_lightning.distributions import Prior, conditional_gumbel, floor_log_pmf, sample_gumbel, with_samples
from gengs_lightning.estimators.base import EstimatorOutput, Objective, inject_gradients
from gengs_lightning.estimators.registry import register
from gengs_lightning.estimators.score_function import (
    ScoreFunctionDraw,
    ScoreFunctionEstimator,
    TruncationArg,
    check_decay,
)
from gengs_lightning.estimators.windowed import WindowArg, WindowedEstimator


class ControlVariateEstimator(WindowedEstimator):
    """Shared flow of REBAR and RELAX on the truncated table (see the module docstring).

    Samples: training and eval draw the exact discrete ``b`` from the posterior of the prior's family
    truncated on the window (tails folded into the edges, journal Definition 3); ``sample`` and
    ``objective`` are those of ``b``. Training also evaluates ``f`` at the relaxed values of ``z`` and
    ``z~`` (``2 S`` more samples in one call of ``objective``). KL: the closed form between that
    truncated posterior and the prior truncated on the same window (journal Proposition 6), exact, no
    sampling. In eval mode the estimator draws ``b`` only and takes no variance step.

    Temperature: ``lambda = exp(log_temperature)`` is learned. It starts at ``tau`` and is written into
    the ``tau`` buffer by every forward pass, so ``train/tau`` shows the learned value. A
    :class:`~gengs_lightning.callbacks.TemperatureSchedule` may write the buffer before a batch, but the
    estimator never reads it after construction: the learned temperature wins and the schedule has no
    effect (its value is overwritten by the next forward pass). To change ``lambda`` by hand, write
    ``log_temperature``.

    Stats (logged by models as ``train/<name>``): ``trunc_n`` and ``trunc_tail_mass`` as for GenGS,
    ``cv_temperature`` (``lambda``), ``cv_variance`` (the variance objective, training steps with a
    variance step only) and the subclass's own (REBAR: ``cv_eta``).

    Subclasses give the control variate (:meth:`control_variate`).

    Args:
        window: Truncation level ``n`` or window ``[a, b]``; ``None`` takes the whole support of finite
            families and otherwise the smallest window holding ``1 - 1e-6`` of the prior.
        num_samples: Independent estimates per example, averaged.
        tau: Initial control-variate temperature ``lambda``.
        lr: Learning rate of the estimator's parameters (:meth:`optimizer_options`).

    Raises:
        ValueError: For an invalid window, ``num_samples``, ``tau`` or ``lr``, naming the value.
    """

    learns_temperature = True
    unbiased = True

    def __init__(self, window: WindowArg = None, num_samples: int = 1, tau: float = 1.0, lr: float = 1e-3):
        super().__init__(window=window, num_samples=num_samples, tau=tau)
        self.lr = float(check_number("lr", lr, 0, meaning="the learning rate of the control variate's parameters"))
        self.log_temperature = nn.Parameter(torch.tensor(math.log(float(self.tau))))

    def optimizer_options(self) -> dict[str, Any]:
        return {"lr": self.lr}

    @property
    def temperature(self) -> Tensor:
        """The control variate's temperature ``lambda = exp(log_temperature)`` (differentiable)."""
        return self.log_temperature.exp()

    # -- what a subclass provides -----------------------------------------------------------------------
    @abstractmethod
    def control_variate(self, f_relaxed: Tensor, scores: Tensor, weights: Tensor) -> Tensor:
        """The control variate ``c(s)`` at scores ``s``, shape ``(S', B)``.

        Args:
            f_relaxed: ``f(sigma_lambda(s))``, shape ``(S', B)``.
            scores: The scores ``s``, shape ``(S', B, D, n)``.
            weights: ``softmax(s / lambda)``, shape ``(S', B, D, n)``.
        """

    def extra_stats(self) -> dict[str, Tensor]:
        """Detached scalars of the control variate worth logging (``train/<name>``)."""
        return {}

    @staticmethod
    def terms(f_hard: Tensor, control: Tensor, control_conditional: Tensor) -> tuple[Tensor, Tensor]:
        """The two parts of the estimate per sample, each ``(S, B)``.

        Returns:
            The score coefficient ``f(b) - c(z~)`` (multiplies ``grad log pi_b``; not differentiated with
            respect to the encoder output, but kept differentiable in the control variate's parameters
            for the variance objective) and the pathwise part ``c(z) - c(z~)`` (differentiated through
            ``z`` and ``z~``).
        """
        return f_hard - control_conditional, control - control_conditional

    def variance_objective(self, grad: Tensor) -> Tensor:
        """What the estimator's parameters minimise: ``mean_batch sum g^2`` of the estimates ``(B, D, R)``.

        The estimate is unbiased whatever the parameters, so its mean does not depend on them and the
        gradient of ``E[g^2]`` in them is that of the variance (Grathwohl et al. 2018, Section 3.3).
        """
        return grad.square().sum((1, 2)).mean()

    # -- the shared flow ------------------------------------------------------------------------------
    def forward(self, params: Tensor, objective: Objective, prior: Prior, kl: bool = True) -> EstimatorOutput:
        posterior, prior_table = self.tables(params, prior)
        batch, num = params.shape[0], self.num_samples
        with torch.no_grad():
            self.tau.copy_(self.temperature)
        stats = {
            **self.truncation_stats(posterior, prior_table, prior),
            "cv_temperature": self.temperature.detach().clone(),
            **self.extra_stats(),
        }
        kl_term = self.kl_term(posterior, prior_table, kl, params)
        if not self.training:
            return self.exact_output(posterior, objective, kl_term, stats)

        # The estimate is taken with respect to a detached copy of the encoder output, then routed back.
        grad_on = torch.is_grad_enabled()
        leaf = params.detach().requires_grad_(grad_on)
        table = prior.posterior(leaf, posterior.window)
        log_pmf = floor_log_pmf(table.log_pmf)  # (B, D, n), normalised
        scores = with_samples(log_pmf, (num,))  # (S, B, D, n)
        scores = scores + sample_gumbel(scores.shape, scores.dtype, scores.device, finite=True)
        index = scores.detach().argmax(-1)  # (S, B, D): exact draws of the table (Gumbel-max)
        outcomes = table.outcomes.to(log_pmf)
        sample = outcomes[index]
        value = self.check_objective(objective(sample), batch)
        loss = value.mean(0) + kl_term
        surrogate = loss.mean()  # decoder: grad f(b); encoder: the KL (the estimate is added below)
        if not grad_on:
            return EstimatorOutput(sample, value, kl_term, loss, surrogate, posterior, stats)

        conditional = conditional_gumbel(log_pmf.expand_as(scores), index, normalized=True)
        both = torch.cat([scores, conditional])  # z and z~, (2S, B, D, n)
        weights = torch.softmax(both / self.temperature.to(both.dtype), -1)
        relaxed_value = self.check_objective(objective(weights @ outcomes), batch, 2 * num, "relaxed samples")
        control, control_conditional = self.control_variate(relaxed_value, both, weights).split(num)
        coefficient, pathwise = self.terms(value.detach(), control, control_conditional)
        # sum_s coefficient_s grad log pi_{b_s} = J^T (sum_s coefficient_s onehot(b_s)): a vector-Jacobian
        # product whose vector holds the coefficients, which autograd does not differentiate in the leaf.
        one_hot = torch.nn.functional.one_hot(index, log_pmf.shape[-1]).to(log_pmf)
        score_vector = (coefficient[..., None, None] * one_hot).mean(0)  # (B, D, n)
        outputs = [(log_pmf, score_vector), (pathwise.mean(0).sum(), None)]
        outputs = [(out, vec) for out, vec in outputs if out.requires_grad]
        own = [p for p in self.parameters() if p.requires_grad]
        grad = None
        if outputs:
            (grad,) = torch.autograd.grad(
                [out for out, _ in outputs],
                leaf,
                grad_outputs=[vec for _, vec in outputs],
                create_graph=bool(own),
                allow_unused=True,
            )
        if grad is None:  # a one-outcome window: nothing depends on the encoder output
            grad = torch.zeros_like(leaf)
        encoder = (params * grad.detach()).sum() / batch
        surrogate = surrogate + (encoder - encoder.detach())
        if own and grad.requires_grad:
            variance = self.variance_objective(grad)
            grads = torch.autograd.grad(variance, own, allow_unused=True)
            surrogate = surrogate + inject_gradients(own, grads).to(surrogate)
            stats["cv_variance"] = variance.detach()
        return EstimatorOutput(sample, value, kl_term, loss, surrogate, posterior, stats)

    def extra_repr(self) -> str:
        return f"lr={self.lr}, {super().extra_repr()}"


@register
class REBAR(ControlVariateEstimator):
    """REBAR (Tucker et al. 2017) on the truncated table of the prior's family.

    Control variate ``c(s) = eta f(sigma_lambda(s))`` with ``sigma_lambda(s) = sum_k c_k softmax(s /
    lambda)_k`` the GenGS relaxed value; the estimate per example is
    ``[f(b) - eta f(sigma(z~))] grad log pi_b + eta grad f(sigma(z)) - eta grad f(sigma(z~))``, averaged
    over ``num_samples`` independent triples ``(b, z, z~)``. ``eta`` (starting at ``eta``) and
    ``log lambda`` (starting at ``log tau``) are trained to minimise the estimate's variance.

    Samples (exact draws ``b`` of the truncated table), KL and the learned temperature: see
    :class:`ControlVariateEstimator`.

    Args:
        window: Truncation level ``n`` or window ``[a, b]`` (see :class:`ControlVariateEstimator`).
        num_samples: Independent estimates per example, averaged.
        tau: Initial temperature ``lambda``.
        lr: Learning rate of ``eta`` and ``log lambda``.
        eta: Initial scale of the control variate.

    Raises:
        ValueError: For an invalid window, ``num_samples``, ``tau``, ``lr`` or ``eta``, naming the value.
    """

    def __init__(
        self,
        window: WindowArg = None,
        num_samples: int = 1,
        tau: float = 1.0,
        lr: float = 1e-3,
        eta: float = 1.0,
    ):
        super().__init__(window=window, num_samples=num_samples, tau=tau, lr=lr)
        check_number("eta", eta, meaning="the initial scale of the control variate")
        self.eta = nn.Parameter(torch.tensor(float(eta)))

    def control_variate(self, f_relaxed: Tensor, scores: Tensor, weights: Tensor) -> Tensor:
        return self.eta.to(f_relaxed) * f_relaxed

    def extra_stats(self) -> dict[str, Tensor]:
        return {"cv_eta": self.eta.detach().clone()}

    def extra_repr(self) -> str:
        return f"eta={self.eta.item():.4g}, {super().extra_repr()}"


def relax_features(weights: Tensor) -> Tensor:
    """Fixed-size summary of relaxed weights ``(..., n)`` per latent dimension, ``(..., 3)``.

    The relaxed position in the table ``sum_k w_k k / (n - 1)`` (for count families the relaxed value
    ``sigma_lambda(s)`` rescaled to ``[0, 1]``), the concentration ``sum_k w_k^2`` and the normalised
    entropy ``-sum_k w_k log w_k / log n``: smooth in the scores, the same size for every family and
    window.
    """
    n = weights.shape[-1]
    if n == 1:
        return torch.cat(
            [
                weights.new_zeros(weights.shape[:-1] + (1,)),
                weights.new_ones(weights.shape[:-1] + (1,)),
                weights.new_zeros(weights.shape[:-1] + (1,)),
            ],
            -1,
        )
    grid = torch.linspace(0.0, 1.0, n, dtype=weights.dtype, device=weights.device)
    position = weights @ grid
    concentration = weights.square().sum(-1)
    # w log w with log w floored at the smallest normal number: a weight that underflowed to 0 gets a
    # finite gradient (xlogy's log(0) = -inf times the softmax's zero Jacobian would give NaN).
    log_weights = weights.clamp_min(torch.finfo(weights.dtype).tiny).log()
    entropy = -(weights * log_weights).sum(-1) / math.log(n)
    return torch.stack([position, concentration, entropy], -1)


@register
class RELAX(ControlVariateEstimator):
    """RELAX (Grathwohl et al. 2018) on the truncated table of the prior's family.

    Control variate ``c_phi(s) = f(sigma_lambda(s)) + r_psi(s)``: the REBAR relaxation (scale one) plus
    a small network ``r_psi(s) = sum_d MLP(features(softmax(s_d / lambda)))`` applied per latent
    dimension to :func:`relax_features` (relaxed position, concentration, entropy; three inputs for
    every family and window) and summed over dimensions. Its last layer starts at zero, so RELAX starts
    as REBAR with ``eta = 1``. ``phi = (log lambda, psi)`` is trained to minimise the estimate's
    variance with learning rate ``lr``.

    Samples (exact draws ``b`` of the truncated table), KL and the learned temperature: see
    :class:`ControlVariateEstimator`.

    Args:
        window: Truncation level ``n`` or window ``[a, b]`` (see :class:`ControlVariateEstimator`).
        num_samples: Independent estimates per example, averaged.
        tau: Initial temperature ``lambda``.
        lr: Learning rate of ``log lambda`` and ``psi``.
        hidden: Hidden layer widths of ``r_psi`` (tanh activations; at least one layer).

    Raises:
        ValueError: For an invalid window, ``num_samples``, ``tau``, ``lr`` or ``hidden``, naming the value.
    """

    def __init__(
        self,
        window: WindowArg = None,
        num_samples: int = 1,
        tau: float = 1.0,
        lr: float = 1e-3,
        hidden: Sequence[int] = (16,),
    ):
        super().__init__(window=window, num_samples=num_samples, tau=tau, lr=lr)
        if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Sequence) or len(hidden) < 1:
            raise ValueError(f"hidden must be a non-empty sequence of layer widths (integers >= 1), got {hidden!r}")
        self.hidden = tuple(check_int(f"hidden layer width in {hidden!r}", width, 1) for width in hidden)
        layers: list[nn.Module] = []
        sizes = (3, *self.hidden)
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
            layers += [nn.Linear(fan_in, fan_out), nn.Tanh()]
        last = nn.Linear(sizes[-1], 1)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.network = nn.Sequential(*layers, last)

    def residual(self, weights: Tensor) -> Tensor:
        """``r_psi`` at relaxed weights ``(S', B, D, n)``: per-dimension outputs summed, ``(S', B)``."""
        features = relax_features(weights)
        dtype = self.network[-1].weight.dtype
        return self.network(features.to(dtype)).squeeze(-1).sum(-1).to(weights.dtype)

    def control_variate(self, f_relaxed: Tensor, scores: Tensor, weights: Tensor) -> Tensor:
        return f_relaxed + self.residual(weights)

    def extra_repr(self) -> str:
        return f"hidden={self.hidden}, {super().extra_repr()}"


@register
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

    unbiased = False  # up to the positive factor of the variance normalisation

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
        self.baseline_hidden = check_int("baseline_hidden", baseline_hidden, 1)
        self.baseline_lr = float(check_number("baseline_lr", baseline_lr, 0))
        self.decay = check_decay(decay)
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


@register
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
            at_mean = self.check_objective(
                draw.objective(point), draw.params.shape[0], 1, "posterior means (per example)"
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
