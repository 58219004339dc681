"""The one interface every gradient estimator implements."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from gengs_lightning.distributions import DiscreteFamily, Prior, TruncatedDiscrete, Window

#: ``objective(z) -> loss``: latent samples of shape ``(S, B, D, *event)`` to per-sample, per-example
#: losses of shape ``(S, B)`` (e.g. the negative log-likelihood ``-log p(x | z)`` of a VAE).
Objective = Callable[[Tensor], Tensor]


class ParameterRangeError(ValueError):
    """Encoder outputs that an estimator cannot sample from (e.g. a rate beyond torch's samplers).

    Models catch it around the estimator and raise it again with the training step
    (:meth:`DiscreteLatentModule.run_estimator <gengs_lightning.models.DiscreteLatentModule.run_estimator>`).
    """


def inject_gradients(params: Sequence[Tensor], grads: Sequence[Tensor | None]) -> Tensor:
    """A zero-valued term whose backward pass writes ``grads`` into ``params``.

    ``sum_p (p * g_p.detach()).sum() - (same).detach()``: adding it to a surrogate makes ``backward`` (and
    DDP's gradient all-reduce) deliver a gradient the estimator computed itself, for instance the gradient
    of a variance objective with respect to a control variate's parameters (REBAR, RELAX), without that
    objective touching any other parameter.
    """
    terms = [(p * g.detach()).sum() for p, g in zip(params, grads, strict=True) if g is not None]
    if not terms:
        return torch.zeros(())
    total = torch.stack(terms).sum()
    return total - total.detach()


def check_temperature(tau: float, name: str = "tau") -> float:
    """Return ``tau`` if it is a finite positive number.

    Args:
        tau: The temperature.
        name: The argument it was given as, for the message (e.g. a schedule's ``tau_min``).

    Raises:
        ValueError: Otherwise, naming the argument and the value.
    """
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not (0.0 < tau < math.inf):
        raise ValueError(f"temperature {name} must be a finite number > 0, got {tau!r}")
    return float(tau)


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


def check_num_samples(num_samples: int, minimum: int = 1, owner: str = "the estimator") -> int:
    """Return ``num_samples`` if it is an integer >= 1 and >= ``minimum``.

    Args:
        num_samples: Latent samples per example.
        minimum: The fewest the estimator works with (:attr:`Estimator.min_samples`).
        owner: Who needs ``minimum``, for the message (e.g. ``ReinforceLOO``).

    Raises:
        ValueError: Otherwise, naming the value.
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be an integer >= 1, got {num_samples!r}")
    if num_samples < minimum:
        raise ValueError(f"{owner} needs num_samples >= {minimum}, got {num_samples!r}")
    return num_samples


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
    cut = set()
    if window.low > 0:
        cut.add(0)
    if support is None or window.high < support.high:
        cut.add(posterior.num_outcomes - 1)
    if not cut:
        return torch.zeros(())
    mass = posterior.log_pmf.detach()[..., sorted(cut)].exp().sum(-1).float()  # (B, D)
    return mass.mean(0).max()


@dataclass
class EstimatorOutput:
    """What an estimator returns to the model.

    Attributes:
        sample: The latent samples the objective was evaluated at, ``(S, B, D, *event)``.
        objective: The objective at each sample, ``(S, B)``.
        kl: ``KL(q(z | x) || p(z))`` per example, ``(B,)`` (zeros without a KL term).
        loss: The per-example loss to report, ``(B,)``: mean objective plus KL.
        surrogate: A scalar whose gradient is the estimator's gradient of ``loss.mean()``.
        posterior: The approximate posterior ``q(z | x)``.
        stats: Scalars worth logging (e.g. :func:`truncation_stats`), detached.
    """

    sample: Tensor
    objective: Tensor
    kl: Tensor
    loss: Tensor
    surrogate: Tensor
    posterior: Distribution
    stats: dict[str, Tensor] = field(default_factory=dict)


class Estimator(nn.Module, ABC):
    """A gradient estimator for models with discrete latents.

    A model hands the estimator its encoder output (``params``, shape ``(B, D, raw_size)``), a
    callable ``objective(z) -> (S, B)`` and the prior, and gets back an :class:`EstimatorOutput` whose
    ``surrogate`` it backpropagates. Reparameterised estimators differentiate through a relaxed
    sample; score-function estimators use ``objective`` at samples. So models never need to know
    which estimator they run.

    The temperature ``tau`` is a buffer: it moves with the module, is saved in checkpoints and is set
    by :class:`~gengs_lightning.callbacks.TemperatureSchedule`. In eval mode estimators draw exact
    discrete samples, so validation and test losses are those of the discrete model.

    Args:
        num_samples: Latent samples per example ``S`` (multi-sample training, NeurIPS Table 1).
        tau: Initial temperature (estimators without a relaxation keep it for a uniform interface).
    """

    tau: Tensor
    #: Whether the estimator sets its own temperature (REBAR and RELAX learn it); schedules then do nothing.
    learns_temperature: bool = False
    #: The fewest latent samples per example it works with (2 for leave-one-out baselines). A smaller
    #: ``num_samples`` is refused here; the CLI raises a configuration's to it when the estimator is swapped in.
    min_samples: int = 1

    def __init__(self, num_samples: int = 1, tau: float = 1.0):
        super().__init__()
        self.num_samples = check_num_samples(num_samples, self.min_samples, type(self).__name__)
        self.register_buffer("tau", torch.tensor(check_temperature(tau)))

    @abstractmethod
    def raw_size(self, prior: Prior) -> int:
        """Number of encoder outputs per latent dimension that this estimator needs for ``prior``."""

    @abstractmethod
    def posterior(self, params: Tensor, prior: Prior) -> Distribution:
        """The approximate posterior built from encoder outputs of shape ``(B, D, raw_size)``."""

    @abstractmethod
    def prior_distribution(self, posterior: Distribution, prior: Prior) -> Distribution:
        """The prior on the posterior's support: what the KL and importance weights compare against."""

    @abstractmethod
    def raw_like(self, prior: Prior) -> Tensor:
        """Encoder outputs ``(*prior_batch, raw_size)`` whose posterior is the prior (e.g. to initialise)."""

    @abstractmethod
    def forward(self, params: Tensor, objective: Objective, prior: Prior, kl: bool = True) -> EstimatorOutput:
        """Estimate the loss and its gradient.

        Args:
            params: Encoder output, shape ``(B, D, raw_size(prior))``.
            objective: ``z -> (S, B)`` losses, without the KL term.
            prior: The latent's prior; it also fixes the family and its structural parameters.
            kl: Whether to add ``KL(q || p)`` (the toy task has no KL term).

        Returns:
            The samples, losses, KL and surrogate.
        """

    def optimizer_options(self) -> dict[str, Any]:
        """Optimizer settings for this estimator's own parameters (their parameter group), e.g. ``{"lr": 1e-3}``.

        Estimators with learned baselines or control variates return their learning rate here; the model
        puts those parameters in a separate group of its optimizer, so no model needs to know about them.
        """
        return {}

    def set_temperature(self, tau: float) -> None:
        """Write a new temperature into the buffer (in place, so devices and references stay valid)."""
        self.tau.fill_(check_temperature(tau))

    def check_params(self, params: Tensor, prior: Prior) -> None:
        """Check the encoder output's shape before any work.

        Raises:
            ValueError: If ``params`` is not ``(B, D, raw_size)``, naming the shape and the expected one.
        """
        expected = self.raw_size(prior)
        if params.dim() != 3 or params.shape[-1] != expected:
            raise ValueError(
                f"{type(self).__name__} with a {prior.family.family_name} prior needs an encoder output of "
                f"shape (batch, latent_dim, {expected}); got {tuple(params.shape)}"
            )

    def check_objective(self, value: Tensor, batch_size: int) -> Tensor:
        """Check that the objective returned ``(S, B)``.

        Raises:
            ValueError: Otherwise, naming the shape.
        """
        expected = (self.num_samples, batch_size)
        if tuple(value.shape) != expected:
            raise ValueError(
                f"objective(z) must return per-sample, per-example losses {expected}, got {tuple(value.shape)}"
            )
        return value

    def extra_repr(self) -> str:
        return f"num_samples={self.num_samples}, tau={self.tau.item():.4g}"


class TruncatedTableEstimator(Estimator):
    """An estimator on the prior's family truncated on a window, parametrised as explicit GenGS.

    The encoder gives the family's parameters (``raw_size = prior.raw_size``); the posterior is the
    family truncated on ``window`` with the tails folded into the edge categories (journal Definition
    3), and the prior the estimator compares against is the prior truncated on the same window
    (journal Proposition 6). Subclasses give the estimate (:meth:`forward`).

    Args:
        window: Truncation level ``n`` or window ``[a, b]``; ``None`` takes the whole support of finite
            families and otherwise the smallest window holding ``1 - 1e-6`` of the prior.
        num_samples: Samples per example.
        tau: Temperature.
    """

    def __init__(self, window: WindowArg = None, num_samples: int = 1, tau: float = 1.0):
        super().__init__(num_samples=num_samples, tau=tau)
        self.window = check_window(window)

    def raw_size(self, prior: Prior) -> int:
        return prior.raw_size

    def posterior(self, params: Tensor, prior: Prior) -> DiscreteFamily:
        """The prior's family with the encoder's parameters, truncated on the window."""
        return prior.posterior(params, prior.resolve_window(self.window))

    def prior_distribution(self, posterior: TruncatedDiscrete, prior: Prior) -> DiscreteFamily:
        """The prior truncated on the posterior's window (journal Proposition 6)."""
        return prior.truncated(posterior.window)

    def raw_like(self, prior: Prior) -> Tensor:
        return prior.truncated(prior.resolve_window(self.window)).to_raw()
