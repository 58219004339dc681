"""Rank zero's checkpoint on every rank, for nodes that share no folder.

Under DDP only global rank zero writes checkpoints, into its own working folder. A rank on another node
that loads the same path finds nothing there (or, worse, an older file of the same name), so ``--test_after_fit``
on two nodes without a shared folder stopped with ``FileNotFoundError`` on one and ``Connection closed by peer``
on the other.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytorch_lightning as pl


@contextmanager
def rank_zero_checkpoint(trainer: pl.Trainer, path: str | None) -> Iterator[str | None]:
    """Rank zero's ``path`` on rank zero; on every other rank, a temporary copy of that file's bytes.

    Every rank must enter it (it broadcasts from rank zero). The path is rank zero's too: each rank
    gets ``None`` if rank zero has no checkpoint. With one process, ``path`` itself.

    Args:
        trainer: The trainer whose strategy broadcasts.
        path: The checkpoint, as rank zero knows it (e.g. ``ModelCheckpoint.best_model_path``).

    Yields:
        A checkpoint path that exists on this rank, or ``None``.
    """
    if trainer.world_size == 1:
        yield path or None
        return
    path = trainer.strategy.broadcast(path or None, src=0)
    if path is None:
        yield None
        return
    data = trainer.strategy.broadcast(Path(path).read_bytes() if trainer.is_global_zero else None, src=0)
    if trainer.is_global_zero:
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="gengs_checkpoint_") as folder:
        copy = Path(folder) / Path(path).name
        copy.write_bytes(data)
        yield str(copy)
