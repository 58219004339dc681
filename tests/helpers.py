"""Helpers shared by the tests: repository paths and TensorBoard event readers."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
SHARED_DATA = REPO.parent / "shared" / "data"


def event_dirs(root: Path) -> list[Path]:
    """Directories under ``root`` that hold TensorBoard event files."""
    return sorted({p.parent for p in root.rglob("events.out.tfevents.*")})


def read_scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """All scalars of one run directory as ``{tag: [(step, value), ...]}``."""
    accumulator = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}


class RecordNoise(pl.Callback):
    """Write each rank's first uniform draws of training to ``noise_rank<r>.txt`` in the working directory."""

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        state = torch.get_rng_state()
        Path(f"noise_rank{trainer.global_rank}.txt").write_text(repr(torch.rand(4).tolist()))
        torch.set_rng_state(state)
