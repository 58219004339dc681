"""Variance of a model's encoder gradient over independent estimator draws (NeurIPS Figure 3, for any model)."""

from __future__ import annotations

import copy
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

from gengs_lightning.checks import check_int
from gengs_lightning.models.gradients import gradient_statistics


class GradientMonitor(Callback):
    """Every ``every_n_steps`` steps, log ``train/grad_var``: the variance of the encoder's gradient.

    On one fixed training batch (the first one of the fit, kept on the device), the model draws
    ``num_draws`` gradient estimates with fresh noise (its ``gradient_draws(batch, num_draws)``, e.g.
    :meth:`~gengs_lightning.models.DiscreteLatentModule.gradient_draws`: the gradient of the surrogate with
    respect to the encoder's parameters, with the estimator's state restored afterwards, so monitoring does
    not change training); ``train/grad_var`` is their total variance ``sum_p Var[g_p]``
    (:func:`~gengs_lightning.models.gradients.gradient_statistics`). Rank zero only.

    Args:
        every_n_steps: Steps between measurements.
        num_draws: Independent estimator draws ``M`` per measurement (at least 2).

    Raises:
        ValueError: For an ``every_n_steps`` that is not an integer >= 1 or a ``num_draws`` that is not one
            >= 2 (``True`` is no integer here); in ``setup``, for a model without ``gradient_draws``.
    """

    def __init__(self, every_n_steps: int = 100, num_draws: int = 50):
        self.every_n_steps = check_int("every_n_steps", every_n_steps, 1)
        self.num_draws = check_int("num_draws", num_draws, 2)
        self._batch: Any = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Refuse, before training, a model that draws no gradients (one that is no ``DiscreteLatentModule``)."""
        if stage == "fit" and not callable(getattr(pl_module, "gradient_draws", None)):
            raise ValueError(
                f"GradientMonitor needs a model with gradient_draws(batch, num_draws), such as a "
                f"DiscreteLatentModule; {type(pl_module).__name__} has none"
            )

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int):
        if self._batch is None:
            self._batch = copy.deepcopy(batch)
        if trainer.global_step % self.every_n_steps or not trainer.is_global_zero:
            return
        variance = self.gradient_variance(pl_module, self._batch)
        for logger in trainer.loggers:
            logger.log_metrics({"train/grad_var": variance}, step=trainer.global_step)

    def gradient_variance(self, pl_module: pl.LightningModule, batch: Any) -> float:
        """Total variance of the encoder gradient over ``num_draws`` of the model's gradient draws on ``batch``."""
        return float(gradient_statistics(pl_module.gradient_draws(batch, self.num_draws))["grad_var"])
