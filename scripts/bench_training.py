"""Training steps per second of the MNIST VAE under Lightning against a plain PyTorch loop, side by side.

Both run the same ``VAE`` module (784-512-256-20, Poisson(2) prior, GenGSImplicit window 16, the model
of configs/vae/mnist_poisson2.yaml), optimizer (Adam) and batch size on the same data. The two loops
take turns step by step in one process: after every Lightning training step, a callback runs one step
of a hand-written loop (next batch, zero the gradients, estimate, backward, optimizer step) on its own
copy of the model, and times it. A Lightning step is the time from the start of one training batch
to the start of the next, less the plain step run in between. On a shared machine, where other
processes slow everything down for seconds at a time, both loops see the same slow spells, which
separate runs of each do not.

Three Lightning set-ups are measured, each against its own interleaved plain loop:

* ``bare``: the VAE inside a minimal LightningModule with no logging (Lightning's own loop cost);
* ``gengs``: the ``VAE`` as a ``DiscreteLatentModule`` (metric logging, NaN check) with the
  TensorBoard logger;
* ``cli``: ``gengs`` plus what the CLI adds to configs/vae/mnist_poisson2.yaml: the progress bar,
  refreshed every ``--progress_bar_refresh_rate`` (10) steps, and the temperature schedule (the
  config's GradientMonitor is left out: 20 extra estimator draws every 1000 steps are a measurement
  the user asks for, not loop overhead);
* ``every_step``: ``cli`` with the progress bar refreshed after every step (Lightning's default);
* ``compiled`` (with ``--compile``): ``gengs`` with the model's encode and objective under
  ``torch.compile`` (:class:`~gengs_lightning.callbacks.CompileModel`); the steps that compile are
  among the first ones left out.

The overhead is ``lightning / plain - 1`` of the summed step times (throughput) and of the median
step, each the median over rounds with the quartiles. The first two steps of every run are left out.
On CUDA (``--device cuda``) the clocks are read after synchronising the device, so a step's time is
its latency; a host sync inside a step then costs nothing extra, and the figure is Python and launch
overhead.

    python scripts/bench_training.py                       # random binary images of MNIST's shape
    python scripts/bench_training.py --device cuda
    python scripts/bench_training.py --compile             # also the VAE under torch.compile (CompileModel)
    python scripts/bench_training.py --data-dir ../shared/data/mnist --steps 1000
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Iterator

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import TQDMProgressBar
from torch.utils.data import DataLoader

from gengs_lightning.bench_device import describe, parse_device, synchronize
from gengs_lightning.callbacks import CompileModel, TemperatureSchedule
from gengs_lightning.cli import DEFAULT_PROGRESS_BAR_REFRESH_RATE
from gengs_lightning.distributions import Prior
from gengs_lightning.estimators import GenGSImplicit
from gengs_lightning.models import VAE

SKIPPED_STEPS = 2


def make_model() -> VAE:
    """The MNIST VAE of configs/vae/mnist_poisson2.yaml."""
    return VAE(GenGSImplicit(window=16, tau=1.0), Prior("poisson", {"rate": 2.0}))


def make_loader(data_dir: str | None, batch_size: int, steps: int) -> DataLoader:
    """Training images: real dynamically binarised MNIST if ``data_dir`` is given, else random binary ones."""
    if data_dir:
        from pathlib import Path

        from gengs_lightning.data.images import find_file
        from gengs_lightning.data.readers import read_idx

        path = find_file([Path(data_dir)], ["train-images-idx3-ubyte", "train-images-idx3-ubyte.gz"], "MNIST")
        images = torch.bernoulli(read_idx(path).reshape(-1, 784).float() / 255)
    else:
        images = torch.bernoulli(torch.full((batch_size * steps, 784), 0.13))
    return DataLoader(images[: batch_size * steps], batch_size=batch_size, shuffle=True, drop_last=True)


class InterleavedPlainLoop(pl.Callback):
    """Runs one timed step of a plain PyTorch loop after every Lightning training step.

    Attributes:
        batch_starts: Time at the start of every Lightning training batch.
        plain_seconds: Duration of every plain step (including fetching its batch).
    """

    def __init__(self, loader: DataLoader, device: torch.device):
        self.device = device
        self.model = make_model().to(device).train()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.loader = loader
        self.batches: Iterator[torch.Tensor] = iter(())
        self.batch_starts: list[float] = []
        self.plain_seconds: list[float] = []

    def on_train_start(self, trainer, pl_module) -> None:
        self.batches = iter(self.loader)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        synchronize(self.device)
        self.batch_starts.append(time.perf_counter())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        synchronize(self.device)
        start = time.perf_counter()
        plain_batch = next(self.batches).to(self.device)
        self.optimizer.zero_grad()
        self.model.estimate(plain_batch).surrogate.backward()
        self.optimizer.step()
        synchronize(self.device)
        self.plain_seconds.append(time.perf_counter() - start)

    def step_pairs(self) -> tuple[list[float], list[float]]:
        """Seconds of every Lightning step and of the plain step run after it (first steps left out)."""
        starts, plain = self.batch_starts, self.plain_seconds
        lightning = [starts[i + 1] - starts[i] - plain[i] for i in range(len(starts) - 1)]
        return lightning[SKIPPED_STEPS:], plain[SKIPPED_STEPS : len(lightning)]


class BareModule(pl.LightningModule):
    """The same VAE in a minimal LightningModule (no logging, no checks): Lightning's own loop cost."""

    def __init__(self):
        super().__init__()
        self.vae = make_model()

    def training_step(self, batch, batch_idx):
        return self.vae.estimate(batch).surrogate

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)


SETUPS = {
    "bare": "Lightning, bare module",
    "gengs": "Lightning, gengs VAE",
    "cli": "  + tau schedule, bar every 10",
    "every_step": "  + tau schedule, bar every step",
}


#: With ``--compile``: the ``gengs`` set-up with the model's encode and objective under ``torch.compile``.
COMPILED = {"compiled": "  gengs VAE, torch.compile"}


def run(setup: str, loader: DataLoader, device: torch.device) -> tuple[list[float], list[float]]:
    """One ``Trainer.fit`` epoch of ``setup`` with the plain loop interleaved: both loops' step seconds."""
    plain = InterleavedPlainLoop(loader, device)
    callbacks: list[pl.Callback] = [plain]
    if setup == "compiled":
        callbacks.append(CompileModel())
    with_cli_callbacks = setup in ("cli", "every_step")
    if with_cli_callbacks:
        refresh_rate = 1 if setup == "every_step" else DEFAULT_PROGRESS_BAR_REFRESH_RATE
        callbacks += [TemperatureSchedule("exponential", tau_min=0.5, rate=3e-5), TQDMProgressBar(refresh_rate)]
    with tempfile.TemporaryDirectory() as log_dir:
        trainer = pl.Trainer(
            max_epochs=1,
            accelerator="gpu" if device.type == "cuda" else "cpu",
            devices=[device.index or 0] if device.type == "cuda" else 1,
            logger=pl.loggers.TensorBoardLogger(log_dir, default_hp_metric=False),
            callbacks=callbacks,
            enable_checkpointing=False,
            enable_progress_bar=with_cli_callbacks,
            enable_model_summary=False,
            num_sanity_val_steps=0,
        )
        trainer.fit(BareModule() if setup == "bare" else make_model(), loader)
    return plain.step_pairs()


def spread(percents: list[float]) -> str:
    """Median with the quartiles, in percent."""
    low, median, high = statistics.quantiles(percents, n=4) if len(percents) > 1 else percents * 3
    return f"{median:+5.1f}% ({low:+.1f}% .. {high:+.1f}%)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None, help="folder with MNIST's IDX files (optional)")
    parser.add_argument("--steps", type=int, default=300, help="training steps per run")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5, help="runs of every set-up, taking turns")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--compile", action="store_true", help="also time the gengs VAE under torch.compile")
    args = parser.parse_args()
    setups = {**SETUPS, **(COMPILED if args.compile else {})}
    device = parse_device(args.device)
    if args.steps < SKIPPED_STEPS + 3:
        parser.error(f"--steps must be at least {SKIPPED_STEPS + 3}, got {args.steps}")
    torch.manual_seed(0)
    loader = make_loader(args.data_dir, args.batch_size, args.steps)
    run("bare", make_loader(None, args.batch_size, 20), device)  # warm up kernels and allocator
    totals: dict[str, list[float]] = {setup: [] for setup in setups}
    medians: dict[str, list[float]] = {setup: [] for setup in setups}
    seconds: dict[str, list[tuple[float, float]]] = {setup: [] for setup in setups}
    for _ in range(args.rounds):
        for setup in setups:
            lightning, plain = run(setup, loader, device)
            totals[setup].append(100 * (sum(lightning) / sum(plain) - 1))
            medians[setup].append(100 * (statistics.median(lightning) / statistics.median(plain) - 1))
            seconds[setup].append((sum(lightning) / len(lightning), sum(plain) / len(plain)))
    print(
        f"torch {torch.__version__}, {describe(device)}, batch {args.batch_size}, "
        f"steps {len(loader)} per run, rounds {args.rounds}"
    )
    print(f"{'':32}  {'ms/step':>7}  {'plain':>6}  {'overhead of the total (quartiles)':<34}  of the median step")
    for setup, label in setups.items():
        lightning_ms = 1e3 * statistics.median(run_seconds for run_seconds, _ in seconds[setup])
        plain_ms = 1e3 * statistics.median(plain_seconds for _, plain_seconds in seconds[setup])
        print(
            f"{label:<32}: {lightning_ms:7.2f}  {plain_ms:6.2f}  {spread(totals[setup]):<34}  {spread(medians[setup])}"
        )


if __name__ == "__main__":
    main()
