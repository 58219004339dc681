"""The short table the CLI prints when a run ends: its metrics and what the model found."""

from __future__ import annotations

from collections.abc import Mapping

import pytorch_lightning as pl

from gengs_lightning.callbacks.hparams import HParamsTable


def run_summary(trainer: pl.Trainer, model: pl.LightningModule) -> dict[str, float]:
    """The run's best, final and test metrics (:meth:`HParamsTable.results`), then the model's ``summary()`` lines."""
    table = next((callback for callback in trainer.callbacks if isinstance(callback, HParamsTable)), None)
    rows = table.results() if table is not None else {}
    model_summary = getattr(model, "summary", None)
    if callable(model_summary):
        rows.update(model_summary())
    return rows


def format_summary(title: str, rows: Mapping[str, float]) -> str:
    """``title`` over one aligned ``name  value`` line per row, values with 6 significant digits."""
    width = max(map(len, rows), default=0)
    return "\n".join([title, *(f"  {name:<{width}}  {value:.6g}" for name, value in rows.items())])


def print_summary(trainer: pl.Trainer, model: pl.LightningModule, subcommand: str) -> None:
    """Print the summary of a finished ``subcommand`` on global rank zero (nothing when there is nothing to say)."""
    rows = run_summary(trainer, model)
    if rows and trainer.is_global_zero:
        print(format_summary(f"Summary of {subcommand} ({type(model).__name__}):", rows), flush=True)
