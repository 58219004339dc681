"""Helpers shared by the tests: repository paths and TensorBoard event readers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytorch_lightning as pl
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
SHARED_DATA = REPO.parent / "shared" / "data"


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of a CLI run in a subprocess: one thread, the repository and the tests importable."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}", **extra}


def run_ddp_fit(config: Path, save_dir: Path, *extra: str, cwd: Path) -> subprocess.CompletedProcess:
    """``fit`` of ``config`` on two CPU processes (``configs/trainer/ddp_cpu.yaml``) in a subprocess.

    DDP relaunches its command line, so it runs the CLI as a user does; the run must succeed.
    """
    command = [sys.executable, "-m", "gengs_lightning", "fit", "--config", str(config)]
    command += [
        "--config",
        str(CONFIGS / "trainer" / "ddp_cpu.yaml"),
        f"--trainer.logger.init_args.save_dir={save_dir}",
    ]
    result = subprocess.run([*command, *extra], cwd=cwd, env=cli_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


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


class AlternatingImages(pl.LightningDataModule):
    """Validation images that alternate all-zero and all-one rows (``pattern="alternate"``), or only one kind.

    Under DDP with two ranks the distributed sampler gives rank 0 the even rows and rank 1 the odd rows,
    so a metric reduced over one rank only differs sharply from one reduced over both.
    """

    def __init__(self, pattern: str = "alternate", num_images: int = 400, data_dim: int = 64):
        super().__init__()
        self.pattern, self.num_images, self.data_dim = pattern, num_images, data_dim

    def val_dataloader(self) -> torch.utils.data.DataLoader:
        rows = (
            torch.arange(self.num_images) % 2
            if self.pattern == "alternate"
            else torch.full((self.num_images,), int(self.pattern == "ones"))
        )
        images = rows[:, None].float().expand(-1, self.data_dim).contiguous()
        return torch.utils.data.DataLoader(images, batch_size=100)


VOCAB = [f"word{i}" for i in range(30)]


def write_corpus(folder, docs: int = 120, seed: int = 0):
    """A small NVDM-format corpus with two latent themes (words 0-14 and 15-29)."""
    generator = torch.Generator().manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.new").write_text("".join(f"{w} 0\n" for w in VOCAB))
    for name, count in (("train.feat", docs), ("test.feat", docs // 2)):
        lines = []
        for _ in range(count):
            theme = torch.randint(0, 2, (1,), generator=generator).item()
            words = torch.randint(15 * theme, 15 * theme + 15, (20,), generator=generator).bincount(minlength=30)
            lines.append("1 " + " ".join(f"{i + 1}:{c}" for i, c in enumerate(words.tolist()) if c))
        (folder / name).write_text("\n".join(lines) + "\n")
    return folder
