"""The one interface every gradient estimator implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from gengs_lightning.checks import check_int, check_number
from gengs_lightning.distributions import FAMILIES, Prior

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
    """Return ``tau`` as a float if it is a finite positive number.

    Args:
        tau: The temperature.
        name: The argument it was given as, for the message (e.g. a schedule's ``tau_min``).

    Raises:
        ValueError: Otherwise: ``temperature <name> must be a finite number > 0, got <tau>``.
    """
    return float(check_number(f"temperature {name}", tau, 0))


def check_num_samples(num_samples: int, minimum: int = 1, owner: str = "the estimator") -> int:
    """Return ``num_samples`` if it is an integer >= 1 and >= ``minimum``.

    Args:
        num_samples: Latent samples per example.
        minimum: The fewest the estimator works with (:attr:`Estimator.min_samples`).
        owner: Who needs ``minimum``, for the message (e.g. ``ReinforceLOO``).

    Raises:
        ValueError: Otherwise, naming the value.
    """
    check_int("num_samples", num_samples, 1)
    if num_samples < minimum:
        raise ValueError(f"{owner} needs num_samples >= {minimum}, got {num_samples!r}")
    return num_samples


class CountedObjective:
    """An objective that counts the samples it is evaluated at.

    Args:
        objective: ``z -> (S', B)`` losses.

    Attributes:
        evaluations: The sum of ``S'`` over the calls so far: objective evaluations per example.
    """

    def __init__(self, objective: Objective):
        self.objective = objective
        self.evaluations = 0

    def __call__(self, z: Tensor) -> Tensor:
        self.evaluations += z.shape[0]
        return self.objective(z)


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
        stats: Scalars worth logging (e.g. :func:`~gengs_lightning.estimators.truncation_stats`), detached.
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
    learns_temperature: ClassVar[bool] = False
    #: The fewest latent samples per example it works with (2 for leave-one-out baselines). A smaller
    #: ``num_samples`` is refused here; the CLI raises a configuration's to it when the estimator is swapped in.
    min_samples: ClassVar[int] = 1
    #: Whether its gradient is an unbiased estimate of that of ``E_q[objective] + KL`` (relaxations are biased).
    unbiased: ClassVar[bool] = False
    #: Whether training samples are relaxed and differentiated through (reparameterisation); otherwise
    #: they are exact outcomes of the posterior.
    relaxed: ClassVar[bool] = False
    #: The prior families (:data:`~gengs_lightning.distributions.FAMILIES` names) it supports.
    families: ClassVar[tuple[str, ...]] = tuple(FAMILIES)

    @classmethod
    def examples(cls) -> tuple[dict[str, Any], ...]:
        """Constructor arguments of typical instances, valid for every family in :attr:`families`.

        The contract tests build each of them (with other ``num_samples``) on every family, in the manner
        of torch.distributions' ``_get_examples``; an estimator with variants lists one of each.
        """
        return ({},)

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

    def __call__(self, params: Tensor, objective: Objective, prior: Prior, kl: bool = True) -> EstimatorOutput:
        """Run :meth:`forward` and add its objective evaluations per example to ``stats``.

        Every call of ``objective`` on ``(S', B, ...)`` samples counts ``S'`` (:class:`CountedObjective`), so
        ``stats["objective_evals"]`` is the estimator's cost in one measure whatever it does (in training 1
        for Gumbel-Softmax, ``S`` for ``S``-sample REINFORCE, ``S (1 + D m)`` for StoRB; ``S`` in eval mode,
        which draws ``num_samples`` exact samples), and estimators can be compared at equal cost.
        """
        counted = CountedObjective(objective)
        out = super().__call__(params, counted, prior, kl=kl)
        out.stats["objective_evals"] = torch.tensor(float(counted.evaluations))
        return out

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

    def check_objective(self, value: Tensor, batch_size: int, samples: int | None = None, what: str = "") -> Tensor:
        """Check that the objective returned ``(S', B)`` losses at ``S'`` samples of ``B`` examples.

        Args:
            value: What ``objective(z)`` returned.
            batch_size: ``B``.
            samples: ``S'``; by default ``num_samples``.
            what: What the ``S'`` samples are, when they are not the estimator's samples (e.g. ``"relaxed
                samples"``): the message then says the objective must take any number of samples.

        Raises:
            ValueError: Otherwise, naming the shape.
        """
        expected = (self.num_samples if samples is None else samples, batch_size)
        if tuple(value.shape) != expected:
            if what:
                raise ValueError(
                    f"objective(z) must return per-sample, per-example losses for any number of samples: at "
                    f"{expected[0]} {what} of {batch_size} examples it must return {expected}, got {tuple(value.shape)}"
                )
            raise ValueError(
                f"objective(z) must return per-sample, per-example losses {expected}, got {tuple(value.shape)}"
            )
        return value

    def extra_repr(self) -> str:
        return f"num_samples={self.num_samples}, tau={self.tau.item():.4g}"
