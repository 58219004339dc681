"""Training steps per second of the MNIST VAE under Lightning against a plain PyTorch loop.

Both run the same ``VAE`` module (784-512-256-20, Poisson(2) prior, GenGSImplicit window 16), the
same estimator, optimizer (Adam) and batch size on the same DataLoader, for the same number of
steps; the Lightning run uses the TensorBoard logger, the NaN checks and the metric logging of
``DiscreteLatentModule`` as a user gets them. Rounds alternate between the two to share machine noise;
the best round of each is reported with the overhead ``lightning / plain - 1``.

    python scripts/bench_training.py                       # random binary images of MNIST's shape
    python scripts/bench_training.py --data-dir ../shared/data/mnist --steps 500
"""

from __future__ import annotations

import argparse
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


def plain_loop(loader: DataLoader) -> float:
    """Seconds per step of a hand-written loop: estimate, backward, optimizer step."""
    model = make_model().train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    start = time.perf_counter()
    for batch in loader:
        optimizer.zero_grad()
        model.estimate(batch).surrogate.backward()
        optimizer.step()
    return (time.perf_counter() - start) / len(loader)


def lightning_loop(loader: DataLoader) -> float:
    """Seconds per step of ``Trainer.fit`` on the same loader, with the TensorBoard logger."""
    model = make_model()
    with tempfile.TemporaryDirectory() as log_dir:
        trainer = pl.Trainer(
            max_epochs=1,
            logger=pl.loggers.TensorBoardLogger(log_dir, default_hp_metric=False),
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
        )
        start = time.perf_counter()
        trainer.fit(model, loader)
        seconds = time.perf_counter() - start
    return seconds / len(loader)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None, help="folder with MNIST's IDX files (optional)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    loader = make_loader(args.data_dir, args.batch_size, args.steps)
    plain_loop(make_loader(None, args.batch_size, 20))  # warm up kernels and allocator
    plain, lightning = [], []
    for _ in range(args.rounds):
        plain.append(plain_loop(loader))
        lightning.append(lightning_loop(loader))
    best_plain, best_lightning = min(plain), min(lightning)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch {args.batch_size}, steps {len(loader)}")
    print(f"plain PyTorch loop : {1 / best_plain:7.1f} steps/s  ({best_plain * 1e3:.2f} ms/step)")
    print(f"Lightning Trainer  : {1 / best_lightning:7.1f} steps/s  ({best_lightning * 1e3:.2f} ms/step)")
    print(f"Lightning overhead : {100 * (best_lightning / best_plain - 1):+.1f}%")


if __name__ == "__main__":
    main()
