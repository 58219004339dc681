"""REBAR and RELAX: unbiased score-function estimators with relaxed, learned control variates.

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
from torch.distributions import kl_divergence

from gengs_lightning.distributions import Prior
from gengs_lightning.estimators.base import (
    EstimatorOutput,
    Objective,
    TruncatedTableEstimator,
    WindowArg,
    inject_gradients,
    truncation_stats,
)


def _uniform(shape: torch.Size, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``U(0, 1)`` draws kept off zero, so that ``-log(-log u)`` and ``log(-log u)`` stay finite."""
    return torch.rand(shape, dtype=dtype, device=device).clamp_min_(torch.finfo(dtype).tiny)


def _safe_log_pmf(log_pmf: Tensor, normalized: bool = False) -> Tensor:
    """``log pi`` normalised, with ``-inf`` (zero-mass outcomes) raised to a huge finite negative value.

    Zero-mass outcomes keep a zero weight in every softmax; the finite floor keeps the conditional
    Gumbel construction's ``logaddexp`` (and its gradient) free of ``inf - inf``.
    """
    if not normalized:
        log_pmf = log_pmf - log_pmf.logsumexp(-1, keepdim=True)
    return log_pmf.clamp_min(torch.finfo(log_pmf.dtype).min / 8)


def conditional_gumbel(
    log_pmf: Tensor, index: Tensor, uniform: Tensor | None = None, normalized: bool = False
) -> Tensor:
    """Scores ``z~ = log pi + g`` conditioned on ``argmax z~ = index`` (Tucker et al. 2017, Appendix C).

    With normalised ``pi`` and ``v ~ U(0, 1)^n``: ``z~_b = -log(-log v_b)`` (the maximum of Gumbels with
    locations ``log pi`` is a standard Gumbel) and, for ``i != b``,
    ``z~_i = -log(-log v_i / pi_i - log v_b)``, a Gumbel of location ``log pi_i`` truncated below
    ``z~_b``. Computed in log space as ``-logaddexp(log(-log v_i) - log pi_i, log(-log v_b))``, so tiny
    ``pi_i`` neither overflows nor loses the ordering. Differentiable in ``log_pmf`` (reparameterised).
    If ``index`` is drawn from ``pi``, ``z~`` has the law of the unconditional scores ``log pi + g``.

    Args:
        log_pmf: Log-probabilities ``(..., n)`` (normalised here).
        index: The conditioning argmax, ``(...)``, integer.
        uniform: ``v`` of the shape of ``log_pmf`` broadcast with ``index``; drawn if not given.
        normalized: Whether ``log_pmf`` already sums to one in probability space (skips normalising).

    Returns:
        The conditional scores, shape ``(..., n)``.
    """
    log_pmf = _safe_log_pmf(log_pmf, normalized)
    shape = torch.broadcast_shapes(log_pmf.shape, index.shape + log_pmf.shape[-1:])
    if uniform is None:
        uniform = _uniform(shape, log_pmf.dtype, log_pmf.device)
    log_exp = uniform.log().neg().log()  # log E, E = -log v ~ Exponential(1)
    index = index.unsqueeze(-1).expand(shape[:-1] + (1,))
    log_exp_top = log_exp.gather(-1, index)
    others = -torch.logaddexp(log_exp - log_pmf, log_exp_top)
    chosen = torch.zeros(shape, dtype=torch.bool, device=log_pmf.device).scatter_(-1, index, True)
    return torch.where(chosen, -log_exp_top, others)


def _check_lr(lr: float) -> float:
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not (0.0 < lr < math.inf):
        raise ValueError(
            f"lr (the learning rate of the control variate's parameters) must be a finite number > 0, got {lr!r}"
        )
    return float(lr)


class ControlVariateEstimator(TruncatedTableEstimator):
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

    def __init__(self, window: WindowArg = None, num_samples: int = 1, tau: float = 1.0, lr: float = 1e-3):
        super().__init__(window=window, num_samples=num_samples, tau=tau)
        self.lr = _check_lr(lr)
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
        self.check_params(params, prior)
        window = prior.resolve_window(self.window)
        prior_table = prior.truncated(window)
        posterior = prior.posterior(params, window)
        batch, num = params.shape[0], self.num_samples
        with torch.no_grad():
            self.tau.copy_(self.temperature)
        stats = {
            **truncation_stats(posterior, prior),
            "cv_temperature": self.temperature.detach().clone(),
            **self.extra_stats(),
        }
        if kl:
            kl_term = kl_divergence(posterior, prior_table).sum(-1)
        else:
            kl_term = params.new_zeros(batch)

        if not self.training:
            sample = posterior.sample((num,))
            value = self.check_objective(objective(sample), batch)
            loss = value.mean(0) + kl_term
            return EstimatorOutput(sample, value, kl_term, loss, loss.mean(), posterior, stats)

        # The estimate is taken with respect to a detached copy of the encoder output, then routed back.
        grad_on = torch.is_grad_enabled()
        leaf = params.detach().requires_grad_(grad_on)
        table = prior.posterior(leaf, window)
        log_pmf = _safe_log_pmf(table.log_pmf, normalized=True)  # (B, D, n)
        scores = log_pmf.expand((num,) + log_pmf.shape)  # (S, B, D, n)
        scores = scores + _uniform(scores.shape, scores.dtype, scores.device).log().neg().log().neg()
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
        relaxed_value = self._check_relaxed(objective(weights @ outcomes), batch)
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

    def _check_relaxed(self, value: Tensor, batch_size: int) -> Tensor:
        """Check that the objective returned ``(2 S, B)`` at the ``2 S`` relaxed samples.

        Raises:
            ValueError: Otherwise, naming the shape.
        """
        expected = (2 * self.num_samples, batch_size)
        if tuple(value.shape) != expected:
            raise ValueError(
                f"objective(z) must return per-sample, per-example losses for any number of samples: "
                f"at {expected[0]} relaxed samples of {batch_size} examples it must return {expected}, "
                f"got {tuple(value.shape)}"
            )
        return value

    def extra_repr(self) -> str:
        return f"window={self.window}, lr={self.lr}, {super().extra_repr()}"


class REBAR(ControlVariateEstimator):
    """REBAR (Tucker et al. 2017) on the truncated table of the prior's family.

    Control variate ``c(s) = eta f(sigma_lambda(s))`` with ``sigma_lambda(s) = sum_k c_k softmax(s /
    lambda)_k`` the GenGS relaxed value; the estimate per example is
    ``[f(b) - eta f(sigma(z~))] grad log pi_b + eta grad f(sigma(z)) - eta grad f(sigma(z~))``, averaged
    over ``num_samples`` independent triples ``(b, z, z~)``. ``eta`` (starting at ``eta``) and
    ``log lambda`` (starting at ``log tau``) are trained to minimise the estimate's variance.

    Samples from: the posterior of the prior's family truncated on the window (exact draws ``b``; the
    relaxed values only enter the control variate). KL: closed form between the truncated posterior
    and the truncated prior on the same window (journal Proposition 6). The learned ``lambda`` is
    written into ``tau`` every forward pass and a temperature schedule has no effect (see
    :class:`ControlVariateEstimator`).

    Args:
        window: Truncation level ``n`` or window ``[a, b]`` (``None``: see :class:`ControlVariateEstimator`).
        num_samples: Independent estimates per example, averaged.
        tau: Initial temperature ``lambda`` of the relaxation.
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
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not math.isfinite(eta):
            raise ValueError(f"eta (the initial scale of the control variate) must be a finite number, got {eta!r}")
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


class RELAX(ControlVariateEstimator):
    """RELAX (Grathwohl et al. 2018) on the truncated table of the prior's family.

    Control variate ``c_phi(s) = f(sigma_lambda(s)) + r_psi(s)``: the REBAR relaxation (scale one) plus
    a small network ``r_psi(s) = sum_d MLP(features(softmax(s_d / lambda)))`` applied per latent
    dimension to :func:`relax_features` (relaxed position, concentration, entropy; three inputs for
    every family and window) and summed over dimensions. Its last layer starts at zero, so RELAX starts
    as REBAR with ``eta = 1``. ``phi = (log lambda, psi)`` is trained to minimise the estimate's
    variance with learning rate ``lr``.

    Samples from: the posterior of the prior's family truncated on the window (exact draws ``b``; the
    relaxed values only enter the control variate). KL: closed form between the truncated posterior
    and the truncated prior on the same window (journal Proposition 6). The learned ``lambda`` is
    written into ``tau`` every forward pass and a temperature schedule has no effect (see
    :class:`ControlVariateEstimator`).

    Args:
        window: Truncation level ``n`` or window ``[a, b]`` (``None``: see :class:`ControlVariateEstimator`).
        num_samples: Independent estimates per example, averaged.
        tau: Initial temperature ``lambda`` of the relaxation.
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
        for width in hidden:
            if isinstance(width, bool) or not isinstance(width, int) or width < 1:
                raise ValueError(f"hidden layer widths must be integers >= 1, got {width!r} in {hidden!r}")
        self.hidden = tuple(hidden)
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
