"""GenGS estimators: explicit, implicit, straight-through, nonparametric truncation and GenGS-RB."""

from __future__ import annotations

import torch
from torch import Tensor

from gengs_lightning.checks import check_bool, check_int
from gengs_lightning.distributions import (
    COUNT_FAMILIES,
    GenGS,
    Prior,
    TruncatedDiscrete,
    Window,
    check_eps,
    floor_log_pmf,
    quantile_window,
    relaxed_outcome,
    with_samples,
)
from gengs_lightning.estimators.rao_blackwell import RaoBlackwellEstimator, log_mass_outside, substitute
from gengs_lightning.estimators.registry import register
from gengs_lightning.estimators.windowed import RelaxedEstimator, WindowArg


class GenGSEstimator(RelaxedEstimator):
    """Shared flow of the GenGS variants (NeurIPS Section 4.1, Algorithm 1).

    Build the posterior table ``(c, log pi)`` on a window, draw ``z = T(GS(pi, tau))`` (training) or an
    exact discrete sample (eval), evaluate the objective and add the closed-form KL between the
    posterior and the prior truncated on the same window (journal Proposition 6). The reported and
    differentiated loss is ``mean_S objective(z) + KL``. Subclasses say how the posterior is built
    (:class:`~gengs_lightning.estimators.windowed.WindowedEstimator`); the arguments are those of
    :class:`~gengs_lightning.estimators.windowed.RelaxedEstimator`.
    """

    def relaxed_sample(self, posterior: TruncatedDiscrete, params: Tensor) -> Tensor:
        """``T(GS(pi, tau))`` (NeurIPS Theorem 4), straight-through with ``hard``."""
        return GenGS(posterior, self.tau, hard=self.hard, validate_args=False).rsample((self.num_samples,))


@register
class GenGSExplicit(GenGSEstimator):
    """GenGS with explicit inference: the encoder gives the family's parameter (NeurIPS Section 4.1).

    Per latent dimension the encoder outputs ``raw_size`` unconstrained numbers (one for Poisson,
    geometric, negative binomial and binomial; ``K`` logits for categorical and multinomial), mapped
    to the parameter by the family (e.g. ``rate = softplus(raw)``). The posterior is the prior's
    family truncated on the window; samples are relaxed from that truncated table; the KL is the
    closed form between the truncated posterior and prior.
    """


@register
class GenGSStraightThrough(GenGSExplicit):
    """Explicit GenGS with the straight-through trick (NeurIPS Section 4.2, "Discretization").

    The forward value is an integer of the window (a draw of the truncated posterior); the gradient
    is that of the relaxed sample at the same noise. Same arguments as :class:`GenGSExplicit`
    (``hard`` is always true).
    """

    @classmethod
    def examples(cls) -> tuple[dict, ...]:
        return ({},)

    def __init__(self, window: WindowArg = None, num_samples: int = 1, tau: float = 1.0):
        super().__init__(window=window, num_samples=num_samples, tau=tau, hard=True)


@register
class GenGSImplicit(GenGSEstimator):
    """GenGS with implicit inference: the encoder gives the ``n`` truncated-PMF logits directly.

    The posterior is a free categorical over the window's outcomes (NeurIPS Section 4.1, journal
    Algorithm 3), so it need not have the prior's shape; the KL to the truncated prior regularises it.
    The encoder outputs ``n`` numbers per latent dimension (the window size, or the number of outcomes
    of a finite family). ``trunc_tail_mass`` reports the prior's mass outside the window.

    Args:
        window: Truncation level ``n`` or window ``[a, b]`` (see :class:`GenGSEstimator`).
        num_samples: Latent samples per example.
        tau: Initial temperature.
        hard: Straight-through variant.
    """

    implicit = True


@register
class GenGSNonparametric(GenGSExplicit):
    """Explicit GenGS whose window is chosen for every batch (journal Algorithm 2, "GenGS NP").

    The window is the smallest ``[0, n - 1]`` (or ``[a, b]`` with ``two_sided``) holding at least
    ``1 - eps`` of the mass of every posterior in the batch, at most ``max_size`` wide, and at least two
    outcomes wide (a posterior with ``1 - eps`` on one outcome, e.g. a tiny rate, would otherwise be a
    constant latent without gradient). The chosen ``n`` and the mass left outside are logged as
    ``trunc_n`` and ``trunc_tail_mass``.

    Args:
        eps: Tail mass allowed outside the window, in ``(0, 1)``.
        max_size: Cap on the window size (and on its largest outcome + 1), at least 2.
        two_sided: Also cut the left tail.
        num_samples: Latent samples per example.
        tau: Initial temperature.
        hard: Straight-through variant.

    Raises:
        ValueError: If ``eps`` is outside ``(0, 1)`` or ``max_size < 2``.
    """

    def __init__(
        self,
        eps: float = 1e-4,
        max_size: int = 256,
        two_sided: bool = False,
        num_samples: int = 1,
        tau: float = 1.0,
        hard: bool = False,
    ):
        super().__init__(window=None, num_samples=num_samples, tau=tau, hard=hard)
        self.eps = check_eps(eps)
        self.max_size = check_int("max_size", max_size, 2)
        self.two_sided = check_bool("two_sided", two_sided)

    def window_for(self, params: Tensor, prior: Prior) -> Window:
        """The smallest window holding ``1 - eps`` of every posterior of the batch (at least two outcomes)."""
        if not prior.family.truncatable:
            raise ValueError(f"GenGSNonparametric needs a count family; {prior.family.family_name} has no window")
        family_params = prior.family.params_from_raw(params.detach(), **prior.structural)
        window = quantile_window(prior.family, family_params, self.eps, self.max_size, self.two_sided)
        return _at_least_two_outcomes(window, self.max_size)

    families = COUNT_FAMILIES

    @classmethod
    def examples(cls) -> tuple[dict, ...]:
        return ({}, {"two_sided": True}, {"hard": True})

    def extra_repr(self) -> str:
        return f"eps={self.eps}, max_size={self.max_size}, two_sided={self.two_sided}, " + super().extra_repr()


def _at_least_two_outcomes(window: Window, max_size: int) -> Window:
    """``window``, or for one outcome ``c`` the pair ``[c, c + 1]`` (``[c - 1, c]`` at the cap ``max_size - 1``)."""
    if window.size >= 2:
        return window
    low = min(window.low, max_size - 2)
    return Window(low, low + 1)


@register
class GenGSRB(RaoBlackwellEstimator):
    """GenGS with one Rao-Blackwellised category ("GenGS-RB", NeurIPS Section 6.1).

    Per latent dimension, the most probable category ``c = argmax q`` is summed exactly and the rest of
    the table is estimated by GenGS (the GenGS paper adapts the RB idea "utilizing m = 1 in calculating
    the selected gradient ... [and] estimates the remaining gradients by GenGS")::

        E f = q(c) f(c) + (1 - q(c)) E_{q | not c} f
        grad ~= grad q(c) (f(c) - f(x~)) + (1 - q(c)) grad f(x~),  x~ = T(GS(q | not c, tau))

    where ``x~`` is the GenGS relaxed sample (:func:`relaxed_outcome`) of the table restricted to the
    other categories and renormalised (their logits; ``c``'s set to ``-inf``). The choice of ``c``: the
    most probable category, as Liu et al.'s (deterministic) Rao-Blackwellisation and DetRB choose it; it
    maximises the mass handled exactly, and a fixed choice needs no score-function term for the choice
    itself (a sampled ``c`` would: that is StoRB). The RB part is exact; the rest is biased like GenGS,
    the bias vanishing as ``tau -> 0`` (the temperature buffer ``tau``, set by a temperature schedule).
    With two categories the rest is a single outcome, its relaxation is exact and so is the estimate.

    Multiple latent dimensions: per dimension with the other dimensions at an exact draw ``z_{-d}``
    (only the dimension being estimated is relaxed; see the module docstring). The model's parameters
    get ``mean_d [q(c) grad f(c, z_{-d}) + (1 - q(c)) grad f(x~_d, z_{-d})]``.

    Samples from: the posterior of the prior's family truncated on the window; ``sample`` holds exact
    draws ``z`` (``num_samples`` repetitions, averaged), so the reported loss is that of the discrete
    model; the relaxed values enter only the configurations. KL: closed form between the truncated
    posterior and the prior truncated on the same window (journal Proposition 6).

    Cost per step: ``S (1 + 2 D)`` objective evaluations per example in training (two calls: the ``S``
    samples, then ``f(c, z_{-d})`` and ``f(x~_d, z_{-d})`` for every repetition and dimension), ``S`` in
    eval mode.

    Args:
        window: Truncation level ``n`` or window ``[a, b]`` (``None``: see :class:`WindowedEstimator`).
        num_samples: Independent repetitions per example, averaged.
        tau: Initial temperature of the relaxation of the rest.

    Raises:
        ValueError: For an invalid window, ``num_samples`` or ``tau``, naming the value.
    """

    def _train_forward(self, posterior, objective, batch):
        num = self.num_samples
        log_pmf = floor_log_pmf(posterior.log_pmf)  # (B, D, n), differentiable
        outcomes = posterior.outcomes.to(log_pmf)
        n, dim = log_pmf.shape[-1], log_pmf.shape[1]
        top = log_pmf.detach().argmax(-1, keepdim=True)  # (B, D, 1)
        sample = posterior.sample((num,))  # exact draws, (S, B, D, *event)
        value = self.check_objective(objective(sample), batch)

        chosen = torch.zeros_like(log_pmf, dtype=torch.bool).scatter_(-1, top, True)
        rest_logits = log_pmf.masked_fill(chosen, -torch.inf) if n > 1 else log_pmf
        relaxed = relaxed_outcome(with_samples(rest_logits, (num,)), outcomes, self.tau)
        # Forward value unchanged; backward scaled by D: the encoder's pathwise terms are summed over
        # dimensions while the model's are averaged (each configuration moves one dimension only).
        relaxed = relaxed.detach() + dim * (relaxed - relaxed.detach())
        selected = outcomes[top.squeeze(-1)].expand_as(sample)
        alternatives = torch.stack([selected, relaxed], 3)  # (S, B, D, 2, *event)
        configs = substitute(sample, alternatives)
        both = self._evaluate(objective, configs, batch).reshape(num, dim, 2, batch).permute(0, 3, 1, 2)
        f_top, f_rest = both[..., 0], both[..., 1]  # (S, B, D)

        log_q_top = log_pmf.gather(-1, top).squeeze(-1)  # (B, D)
        with torch.no_grad():
            q_top = log_q_top.exp()
            rest_mass = log_mass_outside(log_pmf.detach(), top).exp()
        score = (log_q_top.exp() * (f_top - f_rest).detach()).sum(-1)  # grad q(c) (f(c) - f(x~)), summed over d
        pathwise = (q_top.detach() * f_top + rest_mass * f_rest).mean(-1)
        estimate = (score + pathwise).mean(0)
        return sample, value, estimate, {"rb_mass": q_top.mean()}
