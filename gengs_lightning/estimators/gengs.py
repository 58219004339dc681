"""GenGS estimators: explicit, implicit, straight-through and nonparametric truncation."""

from __future__ import annotations

from abc import abstractmethod

from torch import Tensor
from torch.distributions import kl_divergence

from gengs_lightning.distributions import (
    DiscreteFamily,
    GenGS,
    Prior,
    TruncatedDiscrete,
    Window,
    check_eps,
    quantile_window,
)
from gengs_lightning.estimators.base import (
    Estimator,
    EstimatorOutput,
    Objective,
    WindowArg,
    check_window,
    truncation_stats,
)


class GenGSEstimator(Estimator):
    """Shared flow of the GenGS variants (NeurIPS Section 4.1, Algorithm 1).

    Build the posterior table ``(c, log pi)`` on a window, draw ``z = T(GS(pi, tau))`` (training) or an
    exact discrete sample (eval), evaluate the objective and add the closed-form KL between the
    posterior and the prior truncated on the same window (journal Proposition 6). The reported and
    differentiated loss is ``mean_S objective(z) + KL``. Subclasses say how the posterior is built.

    Args:
        window: Truncation level ``n`` or window ``[a, b]``; ``None`` takes the whole support of finite
            families and otherwise the smallest window holding ``1 - 1e-6`` of the prior.
        num_samples: Latent samples per example.
        tau: Initial temperature.
        hard: Straight-through: discrete forward values, relaxed gradients.
    """

    def __init__(self, window: WindowArg = None, num_samples: int = 1, tau: float = 1.0, hard: bool = False):
        super().__init__(num_samples=num_samples, tau=tau)
        self.window = check_window(window)
        self.hard = hard

    def forward(self, params: Tensor, objective: Objective, prior: Prior, kl: bool = True) -> EstimatorOutput:
        self.check_params(params, prior)
        posterior, prior_table = self._tables(params, prior)
        if self.training:
            sample = GenGS(posterior, self.tau, hard=self.hard, validate_args=False).rsample((self.num_samples,))
        else:
            sample = posterior.sample((self.num_samples,))
        value = self.check_objective(objective(sample), params.shape[0])
        if kl:
            kl_term = kl_divergence(posterior, prior_table).sum(-1)
        else:
            kl_term = value.new_zeros(params.shape[0])
        loss = value.mean(0) + kl_term
        return EstimatorOutput(
            sample=sample,
            objective=value,
            kl=kl_term,
            loss=loss,
            surrogate=loss.mean(),
            posterior=posterior,
            stats=truncation_stats(posterior, prior, self._tail_mass(posterior, prior_table)),
        )

    def posterior(self, params: Tensor, prior: Prior) -> TruncatedDiscrete:
        return self._tables(params, prior)[0]

    def prior_distribution(self, posterior: TruncatedDiscrete, prior: Prior) -> DiscreteFamily:
        """The prior truncated on the posterior's window (journal Proposition 6)."""
        return prior.truncated(posterior.window)

    @abstractmethod
    def _tables(self, params: Tensor, prior: Prior) -> tuple[TruncatedDiscrete, DiscreteFamily]:
        """The posterior table and the prior on the same outcomes."""

    def _tail_mass(self, posterior: TruncatedDiscrete, prior_table: DiscreteFamily) -> Tensor:
        """The mass the truncation leaves outside the window, logged as ``trunc_tail_mass``: the posterior's."""
        return posterior.tail_mass

    def extra_repr(self) -> str:
        return f"window={self.window}, hard={self.hard}, {super().extra_repr()}"


class GenGSExplicit(GenGSEstimator):
    """GenGS with explicit inference: the encoder gives the family's parameter (NeurIPS Section 4.1).

    Per latent dimension the encoder outputs ``raw_size`` unconstrained numbers (one for Poisson,
    geometric, negative binomial and binomial; ``K`` logits for categorical and multinomial), mapped
    to the parameter by the family (e.g. ``rate = softplus(raw)``). The posterior is the prior's
    family truncated on the window; samples are relaxed from that truncated table; the KL is the
    closed form between the truncated posterior and prior.
    """

    def raw_size(self, prior: Prior) -> int:
        return prior.raw_size

    def _tables(self, params: Tensor, prior: Prior) -> tuple[TruncatedDiscrete, DiscreteFamily]:
        window = prior.resolve_window(self.window)
        return prior.posterior(params, window), prior.truncated(window)

    def raw_like(self, prior: Prior) -> Tensor:
        return prior.truncated(prior.resolve_window(self.window)).to_raw()


class GenGSStraightThrough(GenGSExplicit):
    """Explicit GenGS with the straight-through trick (NeurIPS Section 4.2, "Discretization").

    The forward value is an integer of the window (a draw of the truncated posterior); the gradient
    is that of the relaxed sample at the same noise. Same arguments as :class:`GenGSExplicit`
    (``hard`` is always true).
    """

    def __init__(self, window: WindowArg = None, num_samples: int = 1, tau: float = 1.0):
        super().__init__(window=window, num_samples=num_samples, tau=tau, hard=True)


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

    def raw_size(self, prior: Prior) -> int:
        return prior.truncated(prior.resolve_window(self.window)).num_outcomes

    def _tables(self, params: Tensor, prior: Prior) -> tuple[TruncatedDiscrete, DiscreteFamily]:
        prior_table = prior.truncated(prior.resolve_window(self.window))
        posterior = TruncatedDiscrete(params, prior_table.outcomes.to(params), prior_table.window)
        return posterior, prior_table

    def raw_like(self, prior: Prior) -> Tensor:
        return prior.truncated(prior.resolve_window(self.window)).log_pmf

    def _tail_mass(self, posterior: TruncatedDiscrete, prior_table: DiscreteFamily) -> Tensor:
        """The prior's mass outside the window (the posterior's logits have none)."""
        return prior_table.tail_mass


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
        if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 2:
            raise ValueError(f"max_size must be an integer >= 2, got {max_size!r}")
        self.max_size = max_size
        self.two_sided = two_sided

    def _tables(self, params: Tensor, prior: Prior) -> tuple[TruncatedDiscrete, DiscreteFamily]:
        if not prior.family.truncatable:
            raise ValueError(f"GenGSNonparametric needs a count family; {prior.family.family_name} has no window")
        family_params = prior.family.params_from_raw(params.detach(), **prior.structural)
        window = quantile_window(prior.family, family_params, self.eps, self.max_size, self.two_sided)
        window = _at_least_two_outcomes(window, self.max_size)
        return prior.posterior(params, window), prior.truncated(window)

    def extra_repr(self) -> str:
        return f"eps={self.eps}, max_size={self.max_size}, two_sided={self.two_sided}, " + super().extra_repr()


def _at_least_two_outcomes(window: Window, max_size: int) -> Window:
    """``window``, or for one outcome ``c`` the pair ``[c, c + 1]`` (``[c - 1, c]`` at the cap ``max_size - 1``)."""
    if window.size >= 2:
        return window
    low = min(window.low, max_size - 2)
    return Window(low, low + 1)
