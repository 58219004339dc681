"""Temperature annealing for relaxed estimators, in closed form of the global step."""

from __future__ import annotations

import math
from typing import Any, Literal

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_warn

from gengs_lightning.checks import check_choice, check_int, check_number

ScheduleKind = Literal["constant", "exponential", "linear", "cosine"]
KINDS: tuple[str, ...] = ("constant", "exponential", "linear", "cosine")


class TemperatureSchedule(Callback):
    """Set the estimator's temperature ``tau`` from ``trainer.global_step`` before every training batch.

    With ``s`` the global step rounded down to a multiple of ``interval`` and ``f = min(s / total_steps, 1)``:

    * ``constant``: ``tau0``;
    * ``exponential``: ``max(tau_min, tau0 * exp(-rate * s))`` (Jang et al. 2017; the GenGS papers
      anneal the temperature from a large to a small value, NeurIPS Section 3.2);
    * ``linear``: ``tau0 + (tau_min - tau0) f``;
    * ``cosine``: ``tau_min + (tau0 - tau_min) (1 + cos(pi f)) / 2``.

    Because ``tau`` is a function of the step, not an update of the previous value, a run resumed from
    a checkpoint continues exactly where it stopped. The value is written into the estimator's ``tau``
    buffer; the model logs it as ``train/tau``.

    Args:
        kind: Schedule shape.
        tau0: Starting temperature; ``None`` takes the estimator's temperature when training starts
            (kept in this callback's checkpoint state, so resuming does not restart from the annealed
            value).
        tau_min: Final (lowest) temperature of the decaying schedules.
        rate: Decay rate per step of the exponential schedule.
        total_steps: Steps over which linear and cosine schedules reach ``tau_min``; ``None`` uses the
            trainer's estimated number of optimizer steps.
        interval: Update every this many steps (the schedule is piecewise constant in between).

    Raises:
        ValueError: For an unknown kind, a temperature that is not a finite number > 0, a rate that is not a
            finite number >= 0, or a step count or interval that is not an integer >= 1 (``True`` is no
            number here), naming the argument (:mod:`gengs_lightning.checks`).
    """

    def __init__(
        self,
        kind: ScheduleKind = "constant",
        tau0: float | None = None,
        tau_min: float = 0.1,
        rate: float = 1e-4,
        total_steps: int | None = None,
        interval: int = 1,
    ):
        check_choice("temperature schedule", kind, KINDS)
        if tau0 is not None:
            check_number("tau0", tau0, 0, meaning="the starting temperature")
        check_number("tau_min", tau_min, 0, meaning="the final temperature")
        check_number("rate", rate, 0, low_closed=True)
        if total_steps is not None:
            check_int("total_steps", total_steps, 1, meaning="or None for the trainer's estimate")
        check_int("interval", interval, 1)
        self.kind = kind
        self.tau0 = tau0
        self.tau_min = tau_min
        self.rate = rate
        self.total_steps = total_steps
        self.interval = interval
        self._warned = False

    def temperature(self, step: int) -> float:
        """The temperature at global step ``step`` (needs ``tau0`` and, if used, ``total_steps`` set)."""
        step = (step // self.interval) * self.interval
        if self.kind == "constant":
            return self.tau0
        if self.kind == "exponential":
            return max(self.tau_min, self.tau0 * math.exp(-self.rate * step))
        fraction = min(step / self.total_steps, 1.0)
        if self.kind == "linear":
            return self.tau0 + (self.tau_min - self.tau0) * fraction
        return self.tau_min + 0.5 * (self.tau0 - self.tau_min) * (1.0 + math.cos(math.pi * fraction))

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Refuse, before training, to anneal a model that has no temperature (e.g. NVDM's Gaussian latent).

        A constant schedule, the default, leaves such a model alone.

        Raises:
            ValueError: For a decaying schedule on a model without an estimator that has a temperature.
        """
        if stage == "fit" and not _has_temperature(pl_module) and self.kind != "constant":
            raise ValueError(
                f"--temperature.kind {self.kind}: {type(pl_module).__name__} has no estimator with a temperature "
                "to anneal; use --temperature.kind constant"
            )

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int):
        if not _has_temperature(pl_module):
            return
        estimator = pl_module.estimator
        if getattr(estimator, "learns_temperature", False):
            if not self._warned:
                rank_zero_warn(f"{type(estimator).__name__} learns its own temperature; the schedule has no effect")
                self._warned = True
            return
        if self.tau0 is None:
            self.tau0 = float(estimator.tau)
        if self.total_steps is None and self.kind in ("linear", "cosine"):
            estimated = trainer.estimated_stepping_batches
            if not math.isfinite(estimated):
                raise ValueError(f"the {self.kind} schedule needs total_steps when training has no step limit")
            self.total_steps = int(estimated)
        estimator.set_temperature(self.temperature(trainer.global_step))

    def state_dict(self) -> dict[str, Any]:
        return {"tau0": self.tau0, "total_steps": self.total_steps}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the values that were resolved at the start of training; explicit arguments win."""
        if self.tau0 is None:
            self.tau0 = state_dict["tau0"]
        if self.total_steps is None:
            self.total_steps = state_dict["total_steps"]


def _has_temperature(pl_module: pl.LightningModule) -> bool:
    """Whether the model has an estimator whose temperature can be set."""
    return hasattr(getattr(pl_module, "estimator", None), "set_temperature")
