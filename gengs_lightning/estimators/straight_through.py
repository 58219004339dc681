"""The straight-through family since 2019 on a window's outcome table: ReinMax, Gapped ST and Gumbel-Rao.

All three return exact outcomes of the posterior table forward and differ in the gradient they pass back:

* :class:`ReinMax` (Liu et al., NeurIPS 2023): a second-order (Heun) correction of straight-through;
* :class:`GappedStraightThrough` (Fan et al., ICML 2022): ST-Gumbel-Softmax with the Gumbel noise replaced
  by a deterministic perturbation of the logits given the hard sample;
* :class:`GumbelRao` (Paulus, Maddison and Krause, ICLR 2021): the straight-through Gumbel-Softmax
  gradient averaged over ``k`` Gumbel draws conditioned on the hard sample (Rao-Blackwellised).

They work on the window's categorical representation, as GenGS does (NeurIPS Section 4.1): the
posterior is the table ``(c, log pi)`` of the prior's family truncated on the window (explicit
inference) or free logits over its outcomes (``implicit=True``), the one-hot draw ``D`` over the ``n``
outcomes is mapped back to the value ``z = D @ c``, and the KL is the closed form between the
posterior table and the prior truncated on the same window (journal Proposition 6). With a categorical
prior (one-hot outcomes) this is the authors' setting exactly.
"""

from __future__ import annotations

import warnings
from abc import abstractmethod
from typing import Any

import torch
from torch import Tensor

from gengs_lightning.checks import check_bool, check_int, check_number
from gengs_lightning.distributions import (
    TruncatedDiscrete,
    conditional_gumbel,
    floor_log_pmf,
    sample_gumbel,
    with_samples,
)
from gengs_lightning.estimators.base import check_temperature
from gengs_lightning.estimators.registry import register
from gengs_lightning.estimators.windowed import RelaxedEstimator, WindowArg


class StraightThroughEstimator(RelaxedEstimator):
    """Shared flow of the straight-through estimators: exact outcomes forward, a surrogate gradient back.

    Training evaluates the objective once per sample at an exact draw ``z = D @ c`` of the posterior table
    (``D`` one-hot over the window's ``n`` outcomes) whose backward pass is the subclass's
    (:meth:`straight_through`); eval mode evaluates it at exact draws too. Cost: ``num_samples``
    objective evaluations per example and step.

    Args:
        window: Truncation level ``n`` or window ``[a, b]``, or ``None`` (see
            :class:`~gengs_lightning.estimators.windowed.WindowedEstimator`).
        num_samples: Latent samples per example.
        tau: Initial temperature of the gradient's relaxation.
        implicit: The encoder gives the ``n`` logits of the table (NeurIPS Algorithm 3) instead of the
            family's parameters.

    Raises:
        ValueError: For an invalid window, ``num_samples``, ``tau`` or a non-boolean ``implicit``.
    """

    @classmethod
    def examples(cls) -> tuple[dict[str, Any], ...]:
        return ({}, {"implicit": True})

    def __init__(self, window: WindowArg = None, num_samples: int = 1, tau: float = 1.0, implicit: bool = False):
        super().__init__(window=window, num_samples=num_samples, tau=tau, hard=True)
        # An instance attribute over the class's: the windowed base reads ``self.implicit``.
        self.implicit = check_bool("implicit", implicit)

    def relaxed_sample(self, posterior: TruncatedDiscrete, params: Tensor) -> Tensor:
        """``num_samples`` exact outcomes ``(S, B, D, *event)`` carrying the estimator's gradient."""
        logits = floor_log_pmf(posterior.log_pmf)
        logits = with_samples(logits, (self.num_samples,))
        return self.straight_through(logits, posterior.outcomes.to(logits))

    @abstractmethod
    def straight_through(self, logits: Tensor, outcomes: Tensor) -> Tensor:
        """An exact draw ``c[I]``, ``I ~ softmax(logits)``, ``(...)`` or ``(..., K)``, with the surrogate gradient."""

    def extra_repr(self) -> str:
        return f"implicit={self.implicit}, {super().extra_repr()}"


class _ReinMax(torch.autograd.Function):
    """Identity on the one-hot draw ``D`` forward; ReinMax's gradient with respect to the logits backward.

    With ``pi0 = softmax(theta)``, ``pi1 = (softmax(theta / tau) + D) / 2``, ``J(p) = diag(p) - p p^T`` and
    the upstream gradient ``g = dL/dD`` (Liu et al. 2023, Algorithm 2)::

        grad_theta = 2 J(pi1) g - J(pi0) g / 2

    centred over the ``n`` categories (a no-op up to rounding: both Jacobians have zero row sums).
    """

    @staticmethod
    def forward(ctx, logits: Tensor, one_hot: Tensor, tau: Tensor) -> Tensor:
        ctx.save_for_backward(logits, one_hot, tau)
        return one_hot.clone()

    @staticmethod
    def backward(ctx, grad: Tensor):
        logits, one_hot, tau = ctx.saved_tensors
        pi0 = logits.softmax(-1)
        pi1 = 0.5 * ((logits / tau).softmax(-1) + one_hot)
        heun = 2 * grad * pi1
        heun = heun - pi1 * heun.sum(-1, keepdim=True)
        euler = -0.5 * grad * pi0
        euler = euler - pi0 * euler.sum(-1, keepdim=True)
        total = heun + euler
        return total - total.mean(-1, keepdim=True), None, None


@register
class ReinMax(StraightThroughEstimator):
    """ReinMax (Liu et al., "Bridging Discrete and Backpropagation: Straight-Through and Beyond", NeurIPS 2023).

    Straight-through is the first-order (Euler) approximation of ``grad E_D f(D)``; ReinMax is the
    second-order one (Heun's method, Liu et al. Section 4 and Algorithm 2): with ``pi0 = softmax(theta)``,
    ``pi1 = (softmax(theta / tau) + D) / 2`` and ``J(p) = diag(p) - p p^T``,
    ``grad_theta = 2 J(pi1) df/dD - J(pi0) df/dD / 2``. At ``tau = 1`` it is exact for every objective
    linear in ``D`` (the expectation of ``2 J(pi1)`` is ``3 J(pi0) / 2``).

    Samples from: the posterior table of the window (``theta = log pi``; explicit or, with ``implicit``,
    free logits), ``D ~ Categorical(pi)`` drawn by ``torch.multinomial`` as the reference ``reinmax``
    package does (the same random state gives the same draw), mapped to ``z = D @ c``. No Gumbel noise: the
    temperature only enters the gradient. KL: closed form between the posterior table and the prior
    truncated on the same window (journal Proposition 6). Cost: ``num_samples`` objective evaluations per
    example and step.

    Args:
        window: Truncation level ``n`` or window ``[a, b]``, or ``None``.
        num_samples: Latent samples per example.
        tau: Initial temperature, at least 1 (the range Liu et al. state for ReinMax; the ``reinmax``
            package 0.1.0 itself does not check it).
        implicit: Free logits over the window's outcomes instead of the family's parameters.

    Raises:
        ValueError: For ``tau < 1`` (a schedule's lower values are floored: :meth:`set_temperature`), and as
            :class:`StraightThroughEstimator`.
    """

    def __init__(self, window: WindowArg = None, num_samples: int = 1, tau: float = 1.0, implicit: bool = False):
        super().__init__(window=window, num_samples=num_samples, tau=_check_reinmax_tau(tau), implicit=implicit)
        self._floored = False

    def set_temperature(self, tau: float) -> None:
        """Set the temperature, floored at 1 (with a warning, once): a schedule annealing below 1 keeps ``tau = 1``.

        The constructor refuses ``tau < 1``; a temperature schedule shared with the other estimators of a
        configuration (e.g. annealed to 0.5) is held at the bound instead, so that ReinMax runs on every
        configuration by one flag. ``train/tau`` logs the temperature actually used.
        """
        tau = check_temperature(tau)
        if tau < 1:
            if not self._floored:
                warnings.warn(
                    f"ReinMax needs tau >= 1 (Liu et al. 2023); the temperature schedule's {tau:.4g} is held at 1",
                    stacklevel=2,
                )
                self._floored = True
            tau = 1.0
        super().set_temperature(tau)

    def straight_through(self, logits: Tensor, outcomes: Tensor) -> Tensor:
        """``D @ c`` with ``D`` from ``torch.multinomial`` on ``softmax(logits)``, ReinMax's gradient."""
        n = logits.shape[-1]
        with torch.no_grad():
            probs = logits.softmax(-1)
            index = torch.multinomial(probs.reshape(-1, n), num_samples=1, replacement=True)
            one_hot = torch.zeros_like(probs).reshape(-1, n).scatter_(-1, index, 1.0).reshape(probs.shape)
        tau = self.tau.to(logits)
        return _ReinMax.apply(logits, one_hot, tau) @ outcomes


def _check_reinmax_tau(tau: float) -> float:
    return check_number(
        "temperature tau",
        tau,
        1,
        low_closed=True,
        meaning="ReinMax's second-order correction needs tau >= 1, as in Liu et al. 2023",
    )


@register
class GumbelRao(StraightThroughEstimator):
    """Gumbel-Rao (Paulus, Maddison and Krause, ICLR 2021): Rao-Blackwellised straight-through Gumbel-Softmax.

    From "Rao-Blackwellizing the Straight-Through Gumbel-Softmax Gradient Estimator". The straight-through
    Gumbel-Softmax gradient ``d softmax((theta + G) / tau) / d theta`` (at fixed noise
    ``G``) averaged over ``k`` draws of ``G`` from its law given the hard sample ``D = argmax(theta + G)``
    (Paulus et al. Section 3): ``E[grad_ST-GS | D]``. The conditional Gumbels are drawn by
    :func:`~gengs_lightning.distributions.conditional_gumbel` (Paulus et al. Appendix; Maddison et al. 2014)
    and, as in the estimator's definition, are held fixed in ``theta`` (the gradient flows through
    ``theta + G`` only). Same mean as ST-GS, and by the Rao-Blackwell theorem a variance at most ST-GS's,
    falling as ``k`` grows; ``k = 1`` is ST-GS itself (in distribution).

    Samples from: the posterior table of the window (explicit or, with ``implicit``, free logits), ``D`` an
    exact draw by Gumbel-max, mapped to ``z = D @ c``. KL: closed form between the posterior table and the
    prior truncated on the same window (journal Proposition 6). Cost: ``num_samples`` objective evaluations
    per example and step (the ``k`` draws cost a softmax each, not an evaluation).

    Args:
        window: Truncation level ``n`` or window ``[a, b]``, or ``None``.
        num_samples: Latent samples per example.
        tau: Initial temperature.
        implicit: Free logits over the window's outcomes instead of the family's parameters.
        k: Conditional Gumbel draws averaged per sample, at least 1.

    Raises:
        ValueError: For ``k < 1``, and as :class:`StraightThroughEstimator`.
    """

    @classmethod
    def examples(cls) -> tuple[dict[str, Any], ...]:
        return ({}, {"implicit": True, "k": 1})

    def __init__(
        self, window: WindowArg = None, num_samples: int = 1, tau: float = 1.0, implicit: bool = False, k: int = 10
    ):
        super().__init__(window=window, num_samples=num_samples, tau=tau, implicit=implicit)
        self.k = check_int("k", k, 1, meaning="conditional Gumbel draws per sample")

    def straight_through(self, logits: Tensor, outcomes: Tensor) -> Tensor:
        """``c[D]`` with ``D`` by Gumbel-max, and the mean over ``k`` conditional draws of ST-GS's gradient."""
        with torch.no_grad():
            index = (sample_gumbel(logits.shape, logits.dtype, logits.device) + logits).argmax(-1)
            fixed = logits.detach().log_softmax(-1)
            noise = conditional_gumbel(fixed.expand((self.k,) + fixed.shape), index, normalized=True) - fixed
        soft = ((logits + noise) / self.tau.to(logits)).softmax(-1).mean(0) @ outcomes
        return outcomes[index] + (soft - soft.detach())

    def extra_repr(self) -> str:
        return f"k={self.k}, {super().extra_repr()}"


def gapped_logits(logits: Tensor, one_hot: Tensor, gap: float) -> Tensor:
    """The gapped perturbation of ``logits`` given the draw ``D`` (Fan et al. 2022), held constant.

    ``m1 = (max theta - theta) * D`` lifts the drawn category to the largest logit;
    ``m2 = relu(theta - max theta + gap) * (1 - D)`` lowers every other category to at most ``gap`` below it.
    Returns ``theta + m1 - m2`` with the perturbation held constant (``theta``'s gradient passes unchanged):
    its argmax is ``D`` with a margin of at least ``gap``.
    """
    with torch.no_grad():
        top = logits.amax(-1, keepdim=True)
        lift = (top - logits) * one_hot
        lower = torch.relu(logits - top + gap) * (1 - one_hot)
        perturbation = lift - lower
    return logits + perturbation


@register
class GappedStraightThrough(StraightThroughEstimator):
    """Gapped straight-through, GST (Fan et al., ICML 2022): ST-Gumbel-Softmax with a deterministic perturbation.

    From "Training Discrete Deep Generative Models via Gapped Straight-Through Estimator". ST-Gumbel-Softmax's
    gradient ``d softmax((theta + G) / tau) / d theta`` needs noise ``G`` consistent with
    the hard sample ``D``; GST replaces it by a deterministic perturbation ``m(theta, D)`` with the two
    properties Fan et al. identify: ``argmax(theta + m) = D`` and a gap of at least ``gap``
    between the drawn category and the others (:func:`gapped_logits`; ``m`` is held constant). The
    gradient is that of ``softmax((theta + m) / tau) @ c``, a function of ``D`` alone, so it has none of
    the noise's variance; like ST-GS it is biased.

    Samples from: the posterior table of the window (explicit or, with ``implicit``, free logits),
    ``theta = log pi``, ``D`` an exact draw by Gumbel-max, mapped to ``z = D @ c``. KL: closed form between
    the posterior table and the prior truncated on the same window (journal Proposition 6). Cost:
    ``num_samples`` objective evaluations per example and step.

    Args:
        window: Truncation level ``n`` or window ``[a, b]``, or ``None``.
        num_samples: Latent samples per example.
        tau: Initial temperature.
        implicit: Free logits over the window's outcomes instead of the family's parameters.
        gap: The margin ``kappa > 0`` between the drawn category's perturbed logit and the others (default
            1, as in GST's reference implementations).

    Raises:
        ValueError: For ``gap <= 0``, and as :class:`StraightThroughEstimator`.
    """

    @classmethod
    def examples(cls) -> tuple[dict[str, Any], ...]:
        return ({}, {"implicit": True, "gap": 2.0})

    def __init__(
        self,
        window: WindowArg = None,
        num_samples: int = 1,
        tau: float = 1.0,
        implicit: bool = False,
        gap: float = 1.0,
    ):
        super().__init__(window=window, num_samples=num_samples, tau=tau, implicit=implicit)
        self.gap = float(check_number("gap", gap, 0, meaning="the margin of the gapped perturbation"))

    def straight_through(self, logits: Tensor, outcomes: Tensor) -> Tensor:
        """``c[D]`` with ``D`` by Gumbel-max, and the gradient of ``softmax(gapped_logits / tau) @ c``."""
        with torch.no_grad():
            index = (sample_gumbel(logits.shape, logits.dtype, logits.device) + logits).argmax(-1)
            one_hot = torch.zeros_like(logits).scatter_(-1, index.unsqueeze(-1), 1.0)
        soft = (gapped_logits(logits, one_hot, self.gap) / self.tau.to(logits)).softmax(-1) @ outcomes
        return outcomes[index] + (soft - soft.detach())

    def extra_repr(self) -> str:
        return f"gap={self.gap}, {super().extra_repr()}"
