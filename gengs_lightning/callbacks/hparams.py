"""Fill TensorBoard's HPARAMS table with a run's knobs and its ``hp/*`` metrics (see :mod:`gengs_lightning.hparams`)."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import TensorBoardLogger

from gengs_lightning import hparams
from gengs_lightning.callbacks.temperature import TemperatureSchedule


class HParamsTable(Callback):
    """Write a run's row of TensorBoard's HPARAMS table and keep its ``hp/*`` metrics up to date.

    When fitting, validating or testing starts, global rank zero writes the hparams plugin's summaries
    (:func:`~gengs_lightning.hparams.hparams_summaries`) into every TensorBoard logger's run, once per
    run folder, with the model's metrics declared as ``hp/*`` tags. After every validation (not the
    sanity check) each ``val/*`` metric of the model whose value improved on its best (lower is better)
    is logged as ``hp/best_val_*``, and after testing each ``test/*`` metric as ``hp/test_*``, always at
    the current global step, so every curve's steps increase. The best values are kept in checkpoints: a
    resumed fit logs them again when training starts (at the step it resumes from), and a ``validate`` or
    ``test`` of a checkpoint with its session, so its row shows the best validation values of the training.

    The CLI adds this callback to every run; it needs no arguments.
    """

    def __init__(self) -> None:
        self.best: dict[str, float] = {}
        self.last: dict[str, float] = {}
        self.tested: dict[str, float] = {}
        self._written: set[str] = set()

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write_sessions(trainer, pl_module)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._log(trainer, self.best)  # a resumed run's best so far; its step is restored by now

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start_evaluation(trainer, pl_module)

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start_evaluation(trainer, pl_module)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        improved = {}
        for metric, value in self._logged(trainer, pl_module, "val/").items():
            self.last[metric] = value
            if value < self.best.get(metric, float("inf")):
                self.best[metric] = improved[metric] = value
        self._log(trainer, improved)

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        tested = self._logged(trainer, pl_module, "test/")
        self.tested.update(tested)
        self._log(trainer, tested)

    def results(self) -> dict[str, float]:
        """The best and final ``val/*`` values and the ``test/*`` values: ``best val/loss``, ``final val/loss``, ..."""
        rows = {hparams.metric_name(metric): value for metric, value in self.best.items()}
        rows.update({f"final {metric}": value for metric, value in self.last.items()})
        rows.update(self.tested)
        return rows

    def state_dict(self) -> dict[str, Any]:
        return {"best": dict(self.best)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best = dict(state_dict["best"])

    def _start_evaluation(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Give a run that only evaluates (``validate``, ``test``) its session and the checkpoint's best values."""
        if not trainer.sanity_checking and self._write_sessions(trainer, pl_module):
            self._log(trainer, self.best)

    def _write_sessions(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> bool:
        """Write the summaries into each TensorBoard run not written yet; whether there was one (rank zero)."""
        if not trainer.is_global_zero:
            return False
        loggers = [
            logger
            for logger in trainer.loggers
            if isinstance(logger, TensorBoardLogger) and logger.log_dir not in self._written
        ]
        if not loggers:
            return False
        schedule = next((c for c in trainer.callbacks if isinstance(c, TemperatureSchedule)), None)
        summaries = hparams.hparams_summaries(
            hparams.run_hparams(trainer, pl_module, schedule), hparams.hparams_metrics(pl_module)
        )
        for logger in loggers:
            writer = logger.experiment._get_file_writer()  # as Lightning's own log_hyperparams writes them
            for summary in summaries:
                writer.add_summary(summary, trainer.global_step)
            self._written.add(logger.log_dir)
        return True

    @staticmethod
    def _logged(trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> dict[str, float]:
        """The model's metrics of a stage (``val/`` or ``test/``) that the trainer holds now."""
        metrics = trainer.callback_metrics
        return {
            metric: float(metrics[metric])
            for metric in hparams.hparams_metrics(pl_module)
            if metric.startswith(stage) and metric in metrics
        }

    @staticmethod
    def _log(trainer: pl.Trainer, values: dict[str, float]) -> None:
        """Log ``values`` under their ``hp/*`` tags at the current global step (global rank zero)."""
        if not values or not trainer.is_global_zero:
            return
        tagged = {hparams.metric_tag(metric): value for metric, value in values.items()}
        for logger in trainer.loggers:
            logger.log_metrics(tagged, step=trainer.global_step)
