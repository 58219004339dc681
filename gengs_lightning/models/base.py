"""The base LightningModule of every model with discrete latents."""

from __future__ import annotations

import copy
import inspect
import math
import re
import warnings
from abc import abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from types import FrameType
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor, nn
from torchmetrics import MeanMetric

from gengs_lightning.callbacks.resume import ExactResumeMixin
from gengs_lightning.distributions import Prior
from gengs_lightning.estimators import Estimator, EstimatorOutput, Objective, ParameterRangeError
from gengs_lightning.hparams import HParam, estimator_hparams, prior_hparams
from gengs_lightning.models.step_watch import (
    above_watch,
    non_finite_watch,
    raise_if_a_loss_was_not_finite,
    writes_logs_now,
)

_EVAL_STAGES = ("val", "test")

#: ``trunc_edge_mass`` above which training warns, once, that the window no longer covers the posterior:
#: then more than half of a latent dimension's mass (batch mean) sits on an edge where the window cuts support.
EDGE_MASS_WARNING = 0.5


class DiscreteLatentModule(ExactResumeMixin, pl.LightningModule):
    """Base class for models with discrete latents trained by any :class:`Estimator`.

    A subclass writes two methods and nothing else about gradients:

    * :meth:`encode`: the encoder output ``(B, D, estimator.raw_size(prior))`` for a batch;
    * :meth:`objective`: per-sample, per-example losses ``(S, B)`` given a batch and latent samples
      ``(S, B, D, *event)`` (e.g. ``-log p(x | z)``; the KL to the prior is added by the estimator).

    The base class runs the estimator, backpropagates its surrogate, logs ``train/loss``,
    ``train/tau``, the estimator's stats (``train/trunc_n``, ``train/trunc_tail_mass``,
    ``train/trunc_edge_mass``: :func:`~gengs_lightning.estimators.truncation_stats`; and, with a KL
    term, ``train/kl`` and ``train/<objective_name>``) every step, ``val/*`` and ``test/*`` as
    torchmetrics means that are exact under DDP, and stops with the step number when the loss is not
    finite (a non-finite gradient shows as a non-finite loss one step later; checking every gradient
    costs ~4% of a VAE step). It warns once, with the step, when the estimator's ``trunc_edge_mass``
    exceeds :data:`EDGE_MASS_WARNING` (the posterior has run off its truncation window). Both checks
    watch every step on the device and are read on the steps that write logs
    (:mod:`~gengs_lightning.models.step_watch`), so no step waits for the device; they name the first
    step where the loss went bad or the mass ran off. Under DDP
    every rank draws its own noise (see :meth:`setup`).

    Args:
        estimator: The gradient estimator (injected, e.g. ``GenGSExplicit``).
        prior: The latent's prior; it fixes the family. Models without a KL term set
            :attr:`uses_kl` to false and use it only for the family.
        optimizer: Optimizer factory called with the parameters (default Adam with its defaults).
        lr_scheduler: Optional learning-rate scheduler factory.
    """

    #: Whether the loss includes ``KL(q(z | x) || p(z))``.
    uses_kl: bool = True
    #: Name under which the objective term is logged (``recon`` for a VAE).
    objective_name: str = "objective"
    #: Metrics of TensorBoard's HPARAMS table and of the run summary: ``val/*`` at their best, ``test/*``.
    hparams_metrics: tuple[str, ...] = ("val/loss", "test/loss")

    def __init__(
        self,
        estimator: Estimator,
        prior: Prior,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
    ):
        super().__init__()
        if not isinstance(estimator, Estimator):
            raise ValueError(f"estimator must be a gengs_lightning.estimators.Estimator, got {type(estimator)!r}")
        if not isinstance(prior, Prior):
            raise ValueError(f"prior must be a gengs_lightning.distributions.Prior, got {type(prior)!r}")
        self.estimator = estimator
        self.prior = prior
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        names = ("loss", self.objective_name, "kl") if self.uses_kl else ("loss",)
        self.eval_metrics = nn.ModuleDict({f"{s}_{n}": MeanMetric() for s in _EVAL_STAGES for n in names})
        self._warned_edge = False
        self._loss_watch, self._edge_watch = non_finite_watch(), above_watch(EDGE_MASS_WARNING)

    def save_hyperparameters(self, *args: Any, frame: FrameType | None = None, **kwargs: Any) -> None:
        """Lightning's, without its advice to leave the estimator and the prior out.

        Lightning recommends ``ignore=[...]`` for ``nn.Module`` arguments, on every ``load_from_checkpoint``.
        Under the CLI the hyperparameters hold the estimator's and the prior's configuration, which is what
        rebuilds them there, so ignoring them would break reloading: the advice is silenced for exactly the
        arguments that are an :class:`Estimator` or a :class:`Prior`.
        """
        frame = frame or inspect.currentframe().f_back
        modules = [name for name, value in frame.f_locals.items() if isinstance(value, (Estimator, Prior))]
        with warnings.catch_warnings():
            for name in modules:
                advice = f"Attribute '{re.escape(name)}' is an instance of `nn.Module`"
                warnings.filterwarnings("ignore", message=advice)
            super().save_hyperparameters(*args, frame=frame, **kwargs)

    # -- what a model provides ------------------------------------------------------------------------
    @abstractmethod
    def encode(self, batch: Any) -> Tensor:
        """Encoder output for ``batch``, shape ``(B, D, estimator.raw_size(prior))``."""

    @abstractmethod
    def objective(self, batch: Any, z: Tensor) -> Tensor:
        """Per-sample, per-example loss ``(S, B)`` at latent samples ``z`` of shape ``(S, B, D, *event)``."""

    def encoder_parameters(self):
        """Parameters that shape ``q(z | x)`` (whose gradient variance :class:`GradientMonitor` reports).

        Defaults to every parameter but the estimator's own; models with a separate decoder override it.
        """
        own = {id(p) for p in self.estimator.parameters()}
        return (p for p in self.parameters() if id(p) not in own)

    def gradient_draws(self, batch: Any, num_draws: int) -> Iterator[Tensor]:
        """``num_draws`` independent estimates of the encoder gradient on ``batch``, one ``(P,)`` tensor at a time.

        Draw ``m`` is the gradient of the surrogate of one :meth:`estimate` (fresh noise) with respect to
        the :meth:`encoder_parameters` that require a gradient, flattened and concatenated in their order
        (zeros where the surrogate does not reach a parameter), in float64: their variance
        (:func:`~gengs_lightning.models.gradients.gradient_statistics`, which keeps running sums, so no
        more than one draw is held however large ``P``) sums many coordinates. The estimator's state
        (buffers such as a moving-average baseline) is restored once the draws are consumed, so measuring
        does not change training. :class:`~gengs_lightning.callbacks.GradientMonitor` reads this; a model
        with a faster way to draw the same estimates overrides it (:meth:`ToyTask.gradient_draws` returns
        them all at once, an ``(M, P)`` tensor, whose rows are the draws).

        Args:
            batch: A batch.
            num_draws: Independent draws ``M``.

        Yields:
            The draws, each ``(P,)`` with ``P`` the number of encoder parameters. Consume them all.
        """
        params = [p for p in self.encoder_parameters() if p.requires_grad]
        with self.estimator_state_kept(), torch.enable_grad():
            for _ in range(num_draws):
                grads = torch.autograd.grad(self.estimate(batch).surrogate, params, allow_unused=True)
                flat = [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params, strict=True)]
                yield torch.cat([g.reshape(-1) for g in flat]).double()

    @contextmanager
    def estimator_state_kept(self) -> Iterator[None]:
        """Restore the estimator's state (its buffers and parameters) on exit: for measurements besides training."""
        state = copy.deepcopy(self.estimator.state_dict())
        try:
            yield
        finally:
            self.estimator.load_state_dict(state)

    def summary(self) -> dict[str, float]:
        """Lines of the summary the CLI prints after ``fit`` and ``test``, besides the metrics (none by default).

        A model adds what a user wants to read off a finished run, e.g. the toy task's learned parameter.
        """
        return {}

    def latent_hparams(self) -> dict[str, HParam]:
        """The latent's and the estimator's columns of TensorBoard's HPARAMS table (:mod:`gengs_lightning.hparams`).

        The estimator's arguments are those it was configured with (the CLI keeps them in ``hparams_initial``).
        """
        return {**prior_hparams(self.prior), **estimator_hparams(self.estimator, self.hparams_initial.get("estimator"))}

    # -- the shared machinery ------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        """Give every DDP rank its own noise: rank ``r`` re-seeds torch with ``initial_seed + r``.

        The CLI seeds every process alike (so models start identical); without this, all ranks would
        draw the same Gumbel noise and data parallelism would not reduce the gradient's variance. A fit
        resumed from a checkpoint then gets each rank's saved state back (:class:`ExactResume`, which
        Lightning restores after ``setup``).
        """
        if self.trainer is not None and self.trainer.world_size > 1:
            torch.manual_seed((torch.initial_seed() + self.trainer.global_rank) % 2**63)

    def estimate(self, batch: Any) -> EstimatorOutput:
        """Run the estimator on a batch: encoder output, objective and prior go in, losses come out."""
        return self.run_estimator(self.encode(batch), partial(self.objective, batch))

    def run_estimator(
        self, params: Tensor, objective: Objective, prior: Prior | None = None, kl: bool | None = None
    ) -> EstimatorOutput:
        """Call the estimator on encoder outputs; ``prior`` and ``kl`` default to the model's.

        Raises:
            ParameterRangeError: The estimator's, with the global step and epoch added.
        """
        prior = self.prior if prior is None else prior
        try:
            return self.estimator(params, objective, prior, kl=self.uses_kl if kl is None else kl)
        except ParameterRangeError as error:
            raise ParameterRangeError(f"At {self._where()}: {error}") from None

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        out = self.estimate(batch)
        self._watch_step(out, (self.global_step, self.current_epoch, batch_idx))
        if self._logging_step():
            self._check_watched_steps(out)
            self._log_training(out)
        return out.surrogate

    def _logging_step(self) -> bool:
        """Whether this step's scalars are written (:func:`~gengs_lightning.models.step_watch.writes_logs_now`)."""
        return writes_logs_now(self.trainer, self.global_step)

    def _watch_step(self, out: EstimatorOutput, place: tuple[int, int, int]) -> None:
        """Record, on the device, whether the loss is finite and the edge mass high (read at logging steps)."""
        self._loss_watch.update(out.surrogate, place)
        edge = out.stats.get("trunc_edge_mass")
        if edge is not None and not self._warned_edge:
            self._edge_watch.update(edge, place)

    def _log_training(self, out: EstimatorOutput) -> None:
        batch_size = out.loss.shape[0]
        self.log("train/loss", out.loss.mean(), prog_bar=True, batch_size=batch_size)
        if self.uses_kl:
            self.log(f"train/{self.objective_name}", out.objective.mean(), batch_size=batch_size)
            self.log("train/kl", out.kl.mean(), batch_size=batch_size)
        self.log("train/tau", self.estimator.tau, batch_size=batch_size)
        for name, value in out.stats.items():
            self.log(f"train/{name}", value, batch_size=batch_size)

    def validation_step(self, batch: Any, batch_idx: int) -> EstimatorOutput:
        return self._evaluate(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> EstimatorOutput:
        return self._evaluate(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int) -> Tensor:
        """Latent samples for a batch: exact discrete draws of the posterior (eval mode)."""
        return self.estimate(batch).sample

    def _evaluate(self, batch: Any, stage: str) -> EstimatorOutput:
        out = self.estimate(batch)
        values = {"loss": out.loss, self.objective_name: out.objective.mean(0), "kl": out.kl}
        for name, metric in self.eval_metrics.items():
            metric_stage, metric_name = name.split("_", 1)
            if metric_stage == stage:
                metric.update(values[metric_name])
                self.log(f"{stage}/{metric_name}", metric, prog_bar=metric_name == "loss")
        return out

    @torch.no_grad()
    def importance_weighted_nll(self, batch: Any, num_samples: int, chunk_size: int = 50) -> Tensor:
        """``-log p(x)`` per example by importance sampling with the discrete posterior as proposal.

        ``log p(x) ~= logsumexp_k [log p(x | z_k) + log p(z_k) - log q(z_k | x)] - log K`` with
        ``z_k ~ q(z | x)`` drawn exactly (no relaxation), ``log p(x | z) = -objective(x, z)`` and the
        prior on the posterior's support (:meth:`Estimator.prior_distribution`). It is a stochastic
        upper bound on ``-log p(x)`` of the discrete model that tightens as ``K`` grows (Burda et
        al. 2016). Meaningful for models whose objective is a negative log-likelihood.

        Args:
            batch: A batch.
            num_samples: Importance samples ``K`` per example.
            chunk_size: Samples evaluated at once (bounds memory).

        Returns:
            The estimate per example, shape ``(B,)``.
        """
        params = self.encode(batch)
        posterior = self.estimator.posterior(params, self.prior)
        prior = self.estimator.prior_distribution(posterior, self.prior)
        log_weights = []
        for start in range(0, num_samples, chunk_size):
            z = posterior.sample((min(chunk_size, num_samples - start),))
            log_ratio = (prior.log_prob(z) - posterior.log_prob(z)).sum(-1)
            log_weights.append(log_ratio - self.objective(batch, z))
        log_weights = torch.cat(log_weights)
        return math.log(num_samples) - log_weights.logsumexp(0)

    def log_now(self, metrics: dict[str, Tensor | float]) -> None:
        """Write occasional metrics straight to the loggers at the current global step.

        ``self.log`` suits values computed every step; values computed every N steps (gradient
        statistics) go through here so that they are written once, at the step they belong to.
        """
        values = {name: float(value) for name, value in metrics.items()}
        for logger in self.loggers:
            logger.log_metrics(values, step=self.global_step)

    def _check_watched_steps(self, out: EstimatorOutput) -> None:
        """Stop at a non-finite loss and warn once about edge mass, naming the first step since the last check.

        A posterior pinned on the edge of its window (by an absurd learning rate, or a window too narrow
        for the data) trains on: its loss stays flat while the gradient through the folded edge vanishes;
        the warning fires above :data:`EDGE_MASS_WARNING`.

        Raises:
            FloatingPointError: If a loss since the last check was NaN or infinite.
        """
        raise_if_a_loss_was_not_finite(
            self._loss_watch,
            f"tau is {self.estimator.tau.item():.4g} now. If the previous step's loss was finite, its gradient "
            "was not. Lower the learning rate, raise the temperature or widen the truncation window.",
        )
        found = self._edge_watch.pop()  # only updated until the warning
        if found is None:
            return
        self._warned_edge = True
        (step, epoch, batch), edge = found
        window = getattr(out.posterior, "window", None)
        rank_zero_warn(
            f"At global step {step}, epoch {epoch}, batch {batch}: the posterior puts {edge:.3g} of its mass "
            f"(trunc_edge_mass, batch mean of its most affected latent dimension; warning above {EDGE_MASS_WARNING}) "
            f"on the edge of its truncation window {window}: the window no longer covers it. Lower the learning "
            "rate if it jumped there, widen the window (the estimator's window or truncation argument), or use "
            "GenGSNonparametric, which chooses the window for every batch."
        )

    def _where(self) -> str:
        """``global step N, epoch E``: where training is, for messages."""
        return f"global step {self.global_step}, epoch {self.current_epoch}"

    def configure_optimizers(self) -> Any:
        """One optimizer with two parameter groups: the model's, and the estimator's own.

        The estimator's parameters (baselines, control variates) get its
        :meth:`~gengs_lightning.estimators.Estimator.optimizer_options` (e.g. its learning rate).
        """
        own = {id(p) for p in self.estimator.parameters()}
        groups = [{"params": [p for p in self.parameters() if id(p) not in own]}]
        if own:
            groups.append({"params": list(self.estimator.parameters()), **self.estimator.optimizer_options()})
        optimizer = self.optimizer_factory(groups)
        if self.lr_scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.lr_scheduler_factory(optimizer)}
