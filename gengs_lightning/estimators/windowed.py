"""The base of the estimators on a window's outcome table: window, tables, KL, truncation stats, exact samples."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar

import torch
from torch import Tensor
from torch.distributions import Distribution, kl_divergence

from gengs_lightning.checks import check_bool
from gengs_lightning.distributions import DiscreteFamily, Prior, TruncatedDiscrete, Window
from gengs_lightning.estimators.base import Estimator, EstimatorOutput, Objective

#: A truncation window: a level ``n`` (``[0, n - 1]``), a pair ``[a, b]``, or ``None`` for the default.
WindowArg = int | tuple[int, int] | None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_window(spec: WindowArg | Window, name: str = "window") -> Window | None:
    """The window ``spec`` names (``None`` stays ``None``, the estimator's default), if it has two outcomes or more.

    A window of one outcome makes the latent a constant: samples, relaxed or exact, and the score stop
    depending on the encoder, so there is no gradient to estimate (training would fail in ``backward``).

    Args:
        spec: A truncation level ``n`` (``[0, n - 1]``), a pair ``[a, b]`` or a :class:`Window`.
        name: The estimator argument ``spec`` was given as, for the message.

    Raises:
        ValueError: For fewer than two outcomes, naming ``name`` and ``spec``; for other invalid specs,
            the message of :meth:`Window.of`.
    """
    if spec is None:
        return None
    if isinstance(spec, Window):
        size = spec.size
    elif _is_int(spec):
        size = spec
    elif isinstance(spec, (tuple, list)) and len(spec) == 2 and all(map(_is_int, spec)):
        size = spec[1] - spec[0] + 1
    else:
        size = None
    if size is not None and size < 2:
        raise ValueError(
            f"{name} must hold at least 2 outcomes: a truncation level n >= 2 or a pair [a, b] with a < b "
            f"(one outcome is a constant latent, with no gradient); got {spec!r}"
        )
    return Window.of(spec)


def edge_mass(posterior: TruncatedDiscrete, prior: Prior) -> Tensor:
    """The largest batch-mean probability, over latent dimensions, on the window's cut edges.

    The cut edges are the outcomes past which the window drops support: its low edge above 0 and its
    high edge below the end of the family's support. A posterior whose mass piles there is no longer
    covered by the window (its mode lies outside). Zero for tables without a window (categorical,
    multinomial) and for windows that cut nothing.
    """
    window = posterior.window
    if window is None:
        return torch.zeros(())
    support = prior.family.support_window(**prior.structural)
    log_pmf = posterior.log_pmf.detach()
    # basic indexing of the one or two edge columns (an index list would copy an index tensor to the device)
    edges = [log_pmf[..., 0]] if window.low > 0 else []
    if (support is None or window.high < support.high) and not (edges and posterior.num_outcomes == 1):
        edges.append(log_pmf[..., -1])
    if not edges:
        return torch.zeros(())
    mass = sum(edge.exp() for edge in edges).float()  # (B, D)
    return mass.mean(0).max()


def truncation_stats(posterior: TruncatedDiscrete, prior: Prior, tail_mass: Tensor | None = None) -> dict[str, Tensor]:
    """What every estimator on a window's outcome table logs about the truncation (detached scalars).

    * ``trunc_n``: the number of outcomes;
    * ``trunc_tail_mass``: the mass outside the window (batch mean), by default the posterior's own
      (folded into the edges); estimators whose posterior is free logits on the window pass the prior's;
    * ``trunc_edge_mass``: :func:`edge_mass`.

    Args:
        posterior: The posterior table.
        prior: The prior (its family says whether the window's high edge is the end of the support).
        tail_mass: The mass outside the window to report instead of the posterior's.
    """
    tail = posterior.tail_mass if tail_mass is None else tail_mass
    return {
        "trunc_n": torch.tensor(float(posterior.num_outcomes)),
        "trunc_tail_mass": tail.detach().float().mean(),
        "trunc_edge_mass": edge_mass(posterior, prior),
    }


class WindowedEstimator(Estimator):
    """An estimator on the outcome table of the prior's family truncated on a window.

    It owns what every such estimator shares, so that a subclass's :meth:`forward` holds only its own
    mathematics:

    * the window (``window``; ``None`` takes the whole support of finite families and otherwise the
      smallest window holding ``1 - 1e-6`` of the prior) and the prior's table on it
      (:meth:`prior_table`);
    * the posterior on the same outcomes (:meth:`tables`): the prior's family with the encoder's
      parameters, tails folded into the edge categories (explicit inference, journal Definition 3), or,
      with :attr:`implicit`, free logits over the outcomes (NeurIPS Algorithm 3);
    * the closed-form KL between the two (journal Proposition 6, :meth:`kl_term`);
    * the truncation stats (:meth:`truncation_stats`) and the evaluation at exact samples of the
      posterior (:meth:`exact_output`, what eval mode does).

    Args:
        window: Truncation level ``n`` or window ``[a, b]`` (at least two outcomes), or ``None``.
        num_samples: Latent samples per example.
        tau: Temperature.
    """

    #: Whether the encoder gives the table's ``n`` logits (implicit) instead of the family's parameters.
    implicit: ClassVar[bool] = False

    def __init__(self, window: WindowArg = None, num_samples: int = 1, tau: float = 1.0):
        super().__init__(num_samples=num_samples, tau=tau)
        self.window = check_window(window)

    # -- the tables -----------------------------------------------------------------------------------
    def prior_table(self, prior: Prior) -> DiscreteFamily:
        """The prior truncated on the estimator's window (the whole table for categorical and multinomial)."""
        return prior.truncated(prior.resolve_window(self.window))

    def window_for(self, params: Tensor, prior: Prior) -> Window | None:
        """The window of this batch: the estimator's (a hook for windows chosen per batch)."""
        return prior.resolve_window(self.window)

    def tables(self, params: Tensor, prior: Prior) -> tuple[TruncatedDiscrete, DiscreteFamily]:
        """Check the encoder output and build the posterior and the prior on the batch's window."""
        self.check_params(params, prior)
        prior_table = prior.truncated(self.window_for(params, prior))
        return self._posterior_on(params, prior, prior_table), prior_table

    def _posterior_on(self, params: Tensor, prior: Prior, prior_table: DiscreteFamily) -> TruncatedDiscrete:
        if self.implicit:
            return TruncatedDiscrete(params, prior_table.outcomes.to(params), prior_table.window)
        return prior.posterior(params, prior_table.window)

    def raw_size(self, prior: Prior) -> int:
        return self.prior_table(prior).num_outcomes if self.implicit else prior.raw_size

    def posterior(self, params: Tensor, prior: Prior) -> Distribution:
        """The posterior table: the prior's family with the encoder's parameters, or free logits (implicit)."""
        return self._posterior_on(params, prior, prior.truncated(self.window_for(params, prior)))

    def prior_distribution(self, posterior: TruncatedDiscrete, prior: Prior) -> Distribution:
        """The prior truncated on the posterior's window (journal Proposition 6)."""
        return prior.truncated(posterior.window)

    def raw_like(self, prior: Prior) -> Tensor:
        table = self.prior_table(prior)
        return table.log_pmf if self.implicit else table.to_raw()

    # -- the shared terms -----------------------------------------------------------------------------
    def kl_term(self, posterior: Distribution, prior_table: Distribution, kl: bool, params: Tensor) -> Tensor:
        """``KL(q || p)`` per example ``(B,)``, summed over latent dimensions; zeros without ``kl``."""
        if kl:
            return kl_divergence(posterior, prior_table).sum(-1)
        return params.new_zeros(params.shape[0])

    def truncation_stats(
        self, posterior: TruncatedDiscrete, prior_table: DiscreteFamily, prior: Prior
    ) -> dict[str, Tensor]:
        """:func:`truncation_stats`, with the prior's tail mass for implicit posteriors (their logits have none)."""
        return truncation_stats(posterior, prior, prior_table.tail_mass if self.implicit else None)

    def output(
        self,
        sample: Tensor,
        value: Tensor,
        kl_term: Tensor,
        posterior: Distribution,
        stats: dict[str, Tensor],
        surrogate: Tensor | None = None,
    ) -> EstimatorOutput:
        """The output with ``loss = mean_S objective + KL``; the surrogate defaults to ``loss.mean()``."""
        loss = value.mean(0) + kl_term
        return EstimatorOutput(
            sample, value, kl_term, loss, loss.mean() if surrogate is None else surrogate, posterior, stats
        )

    def exact_output(
        self, posterior: TruncatedDiscrete, objective: Objective, kl_term: Tensor, stats: dict[str, Tensor]
    ) -> EstimatorOutput:
        """Evaluate the objective at ``num_samples`` exact draws of the posterior (eval mode)."""
        sample = posterior.sample((self.num_samples,))
        value = self.check_objective(objective(sample), kl_term.shape[0])
        return self.output(sample, value, kl_term, posterior, stats)

    def extra_repr(self) -> str:
        return f"window={self.window}, {super().extra_repr()}"


class RelaxedEstimator(WindowedEstimator):
    """A windowed estimator that differentiates through relaxed samples of the posterior table (pathwise).

    Training evaluates the objective at :meth:`relaxed_sample` (a subclass's relaxation), eval mode at
    exact draws; the loss is ``mean_S objective + KL`` and its gradient the estimate.

    Args:
        window: Truncation level ``n`` or window ``[a, b]``, or ``None`` (see :class:`WindowedEstimator`).
        num_samples: Latent samples per example.
        tau: Initial temperature.
        hard: Straight-through: discrete forward values, relaxed gradients.
    """

    relaxed = True

    @classmethod
    def examples(cls) -> tuple[dict[str, Any], ...]:
        return ({}, {"hard": True})

    def __init__(self, window: WindowArg = None, num_samples: int = 1, tau: float = 1.0, hard: bool = False):
        super().__init__(window=window, num_samples=num_samples, tau=tau)
        self.hard = check_bool("hard", hard)

    def forward(self, params: Tensor, objective: Objective, prior: Prior, kl: bool = True) -> EstimatorOutput:
        posterior, prior_table = self.tables(params, prior)
        kl_term = self.kl_term(posterior, prior_table, kl, params)
        stats = self.truncation_stats(posterior, prior_table, prior)
        if not self.training:
            return self.exact_output(posterior, objective, kl_term, stats)
        sample = self.relaxed_sample(posterior, params)
        return self.output(sample, self.check_objective(objective(sample), params.shape[0]), kl_term, posterior, stats)

    @abstractmethod
    def relaxed_sample(self, posterior: TruncatedDiscrete, params: Tensor) -> Tensor:
        """``num_samples`` relaxed (or, with ``hard``, straight-through) samples ``(S, B, D, *event)``."""

    def extra_repr(self) -> str:
        return f"hard={self.hard}, {super().extra_repr()}"
