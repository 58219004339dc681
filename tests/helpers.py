"""Helpers shared by the tests: repository paths and TensorBoard event readers."""

from __future__ import annotations

from pathlib import Path

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
