"""Variance of a model's encoder gradient over independent estimator draws (NeurIPS Figure 3, for any model)."""

from __future__ import annotations

import copy
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from torch import Tensor


class GradientMonitor(Callback):
    """Every ``every_n_steps`` steps, log ``train/grad_var``: the variance of the encoder's gradient.

    On one fixed training batch (the first one of the fit, kept on the device), the estimator is run
    ``num_draws`` times with fresh noise; ``train/grad_var`` is the total variance
    ``sum_p Var[g_p]`` of the gradient of the surrogate with respect to the parameters of
    ``pl_module.encoder_parameters()`` (all parameters for modules without that method), accumulated
    in float64 without storing the draws. The estimator's state (buffers such as a moving-average
    baseline) is restored afterwards, so monitoring does not change training. Rank zero only.

    Args:
        every_n_steps: Steps between measurements.
        num_draws: Independent estimator draws ``M`` per measurement (at least 2).

    Raises:
        ValueError: For ``every_n_steps < 1`` or ``num_draws < 2``.
    """

    def __init__(self, every_n_steps: int = 100, num_draws: int = 50):
        if not isinstance(every_n_steps, int) or every_n_steps < 1:
            raise ValueError(f"every_n_steps must be an integer >= 1, got {every_n_steps!r}")
        if not isinstance(num_draws, int) or num_draws < 2:
            raise ValueError(f"num_draws must be an integer >= 2, got {num_draws!r}")
        self.every_n_steps = every_n_steps
        self.num_draws = num_draws
        self._batch: Any = None

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int):
        if self._batch is None:
            self._batch = copy.deepcopy(batch)
        if trainer.global_step % self.every_n_steps or not trainer.is_global_zero:
            return
        variance = self.gradient_variance(pl_module, self._batch)
        for logger in trainer.loggers:
            logger.log_metrics({"train/grad_var": variance}, step=trainer.global_step)

    def gradient_variance(self, pl_module: pl.LightningModule, batch: Any) -> float:
        """Total variance of the encoder gradient over ``num_draws`` estimator draws on ``batch``."""
        params = [p for p in _encoder_parameters(pl_module) if p.requires_grad]
        state = copy.deepcopy(pl_module.estimator.state_dict())
        total = squares = None
        with torch.enable_grad():
            for _ in range(self.num_draws):
                grads = torch.autograd.grad(pl_module.estimate(batch).surrogate, params, allow_unused=True)
                flat = torch.cat([_flat(g, p) for g, p in zip(grads, params, strict=True)]).double()
                total = flat if total is None else total + flat
                squares = flat.square() if squares is None else squares + flat.square()
        pl_module.estimator.load_state_dict(state)
        count = self.num_draws
        return float(((squares - total.square() / count) / (count - 1)).sum())


def _encoder_parameters(pl_module: pl.LightningModule):
    method = getattr(pl_module, "encoder_parameters", None)
    return list(method() if method is not None else pl_module.parameters())


def _flat(grad: Tensor | None, param: Tensor) -> Tensor:
    return (grad if grad is not None else torch.zeros_like(param)).reshape(-1)
