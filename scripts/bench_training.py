"""Training steps per second of the MNIST VAE under Lightning against a plain PyTorch loop.

Both run the same ``VAE`` module (784-512-256-20, Poisson(2) prior, GenGSImplicit window 16), the
same estimator, optimizer (Adam) and batch size on the same DataLoader, for the same number of
steps; the Lightning run uses the TensorBoard logger, the NaN checks and the metric logging of
``DiscreteLatentModule`` as a user gets them. Rounds alternate between the two to share machine noise;
the best round of each is reported with the overhead ``lightning / plain - 1`` per step in steady state
(from the second batch to the last) and, separately, the one-off set-up time before the first step.

    python scripts/bench_training.py                       # random binary images of MNIST's shape
    python scripts/bench_training.py --data-dir ../shared/data/mnist --steps 500
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from gengs_lightning.distributions import Prior
from gengs_lightning.estimators import GenGSImplicit
from gengs_lightning.models import VAE


def make_model(estimator_window: int = 16) -> VAE:
    """The MNIST VAE of configs/vae/mnist_poisson2.yaml."""
    return VAE(GenGSImplicit(window=estimator_window, tau=1.0), Prior("poisson", {"rate": 2.0}))


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


class _BatchClock(pl.Callback):
    """Records the time at the start of every training batch."""

    def __init__(self):
        self.times: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.times.append(time.perf_counter())


def steady_seconds(times: list[float]) -> float:
    """Seconds per step between the starts of the second and the last batch (first step excluded)."""
    return (times[-1] - times[1]) / (len(times) - 2)


def plain_loop(loader: DataLoader) -> tuple[float, float]:
    """A hand-written loop (estimate, backward, optimizer step): seconds per step and set-up seconds."""
    start = time.perf_counter()
    model = make_model().train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    times = []
    for batch in loader:
        times.append(time.perf_counter())
        optimizer.zero_grad()
        model.estimate(batch).surrogate.backward()
        optimizer.step()
    return steady_seconds(times), times[0] - start


class BareModule(pl.LightningModule):
    """The same VAE in a minimal LightningModule (no logging, no checks): Lightning's own loop cost."""

    def __init__(self):
        super().__init__()
        self.vae = make_model()

    def training_step(self, batch, batch_idx):
        return self.vae.estimate(batch).surrogate

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def lightning_loop(loader: DataLoader, bare: bool = False) -> tuple[float, float]:
    """``Trainer.fit`` on the same loader with the TensorBoard logger: seconds per step and set-up seconds."""
    clock = _BatchClock()
    with tempfile.TemporaryDirectory() as log_dir:
        start = time.perf_counter()
        trainer = pl.Trainer(
            max_epochs=1,
            logger=pl.loggers.TensorBoardLogger(log_dir, default_hp_metric=False),
            callbacks=[clock],
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
        )
        trainer.fit(BareModule() if bare else make_model(), loader)
    return steady_seconds(clock.times), clock.times[0] - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None, help="folder with MNIST's IDX files (optional)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    torch.manual_seed(0)
    loader = make_loader(args.data_dir, args.batch_size, args.steps)
    plain_loop(make_loader(None, args.batch_size, 20))  # warm up kernels and allocator
    plain, lightning, bare = [], [], []
    for _ in range(args.rounds):
        plain.append(plain_loop(loader))
        lightning.append(lightning_loop(loader))
        bare.append(lightning_loop(loader, bare=True))
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch {args.batch_size}, steps {len(loader)}")
    rows = [("plain PyTorch loop", plain), ("Lightning, bare module", bare), ("Lightning, gengs VAE", lightning)]
    for label, runs in rows:
        seconds = statistics.median(s for s, _ in runs)
        ratios = [run / base for (run, _), (base, _) in zip(runs, plain, strict=True)]
        quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
        print(
            f"{label:<24}: {1 / seconds:7.1f} steps/s ({seconds * 1e3:.2f} ms/step); vs plain "
            f"{100 * (statistics.median(ratios) - 1):+.1f}% (quartiles {100 * (quartiles[0] - 1):+.1f}% .. "
            f"{100 * (quartiles[2] - 1):+.1f}%)"
        )
    setup = statistics.median(s for _, s in lightning), statistics.median(s for _, s in plain)
    print(f"set-up before the first step (not in the above): Lightning {setup[0]:.2f} s, plain {setup[1]:.2f} s")


if __name__ == "__main__":
    main()
