"""Write what ``predict`` computes: each example's latent sample with its dataset index, one file per rank."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BasePredictionWriter
from pytorch_lightning.utilities.rank_zero import rank_zero_info, rank_zero_warn
from torch import Tensor


class PredictionWriter(BasePredictionWriter):
    """Save the latent samples of ``predict`` with the dataset index of each example.

    ``predict_step`` returns latent samples ``(S, B, D, *event)`` (as
    :meth:`~gengs_lightning.models.DiscreteLatentModule.predict_step` does: exact discrete draws). Every
    rank writes the examples it predicted to ``predictions_rank<r>.npz`` in ``dirpath`` (default: the
    run's log folder, ``trainer.log_dir``), a NumPy archive without pickles holding

    * ``indices``: int64 ``(N,)``, the index of each example in the prediction dataset (for a loader
      that does not report them, one without automatic batching such as the toy task's, the
      position of the example in this rank's predictions, with a warning);
    * ``latents``: int64 ``(N, S, D, *event)``, its samples (batch first).

    Read it with ``np.load(path)`` (``torch.from_numpy`` for tensors), or all ranks at once, in index
    order, with :func:`read_predictions`. Files of an earlier ``predict`` in the same folder are removed
    first, so the folder holds exactly this run's ranks.

    Args:
        dirpath: Folder of the files; the run's log folder when ``None``.

    Raises:
        ValueError: If ``predict_step`` returns values that are not whole numbers, or a batch of samples
            whose size differs from the number of dataset indices the loader reports for it.
    """

    def __init__(self, dirpath: str | None = None):
        super().__init__(write_interval="batch")
        self.dirpath = dirpath
        self._folder: Path | None = None
        self._batches: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Fix the folder (on every rank: ``trainer.log_dir`` is rank zero's) and clear an earlier run's files."""
        super().setup(trainer, pl_module, stage)
        if stage != "predict":
            return
        self._folder = Path(self.dirpath if self.dirpath is not None else trainer.log_dir)
        if trainer.is_global_zero and self._folder.is_dir():
            for stale in self._folder.glob("predictions*_rank*.npz"):
                stale.unlink()
        trainer.strategy.barrier("PredictionWriter.setup")

    def on_predict_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._batches = {}

    def write_on_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        prediction: Tensor,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        """Keep the batch's samples, batch first, with the dataset indices of its examples."""
        latents = prediction.detach().movedim(1, 0).cpu()
        batches = self._batches.setdefault(dataloader_idx, [])
        if not batch_indices:
            rank_zero_warn(
                "PredictionWriter: the prediction loader reports no dataset indices (no automatic batching); "
                "'indices' are the positions of the examples in each rank's predictions"
            )
            start = sum(len(indices) for indices, _ in batches)
            batch_indices = range(start, start + len(latents))
        if len(batch_indices) != len(latents):
            raise ValueError(
                f"PredictionWriter: predict_step returned samples of {len(latents)} examples (dimension 1) for a "
                f"batch of {len(batch_indices)}; it expects latent samples (S, B, D, *event)"
            )
        if not torch.equal(latents, latents.round()):
            raise ValueError(
                "PredictionWriter stores discrete latents, but predict_step returned values that are not whole "
                "numbers; it expects the exact samples of DiscreteLatentModule.predict_step"
            )
        batches.append((np.asarray(batch_indices, dtype=np.int64), latents.to(torch.int64).numpy()))

    def on_predict_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Write this rank's file for every prediction loader."""
        assert self._folder is not None, "setup('predict') fixes the folder"
        self._folder.mkdir(parents=True, exist_ok=True)
        several = len(trainer.num_predict_batches) > 1
        for dataloader_idx, batches in self._batches.items():
            indices, latents = (np.concatenate(arrays) for arrays in zip(*batches, strict=True))
            name = _file_name(trainer.global_rank, dataloader_idx if several else None)
            np.savez(self._folder / name, indices=indices, latents=latents)
        rank_zero_info(f"PredictionWriter: wrote the latents to {self._folder / _file_name('*', None)}")
        self._batches = {}


def _file_name(rank: int | str, dataloader_idx: int | None) -> str:
    """``predictions_rank<r>.npz``, or ``predictions_dataloader<k>_rank<r>.npz`` with several loaders."""
    loader = "" if dataloader_idx is None else f"_dataloader{dataloader_idx}"
    return f"predictions{loader}_rank{rank}.npz"


def read_predictions(folder: str | Path, prefix: str = "predictions") -> tuple[np.ndarray, np.ndarray]:
    """The ``indices`` and ``latents`` of every rank's ``<prefix>_rank<r>.npz`` in ``folder``, in index order.

    Args:
        folder: The folder :class:`PredictionWriter` wrote to.
        prefix: ``predictions``, or ``predictions_dataloader<k>`` with several prediction loaders.

    Returns:
        ``indices`` ``(N,)`` sorted, and ``latents`` ``(N, S, D, *event)`` in the same order.

    Raises:
        FileNotFoundError: If ``folder`` holds no such file.
    """
    paths = sorted(Path(folder).glob(f"{prefix}_rank*.npz"))
    if not paths:
        raise FileNotFoundError(f"{folder} holds no {prefix}_rank<r>.npz; run predict with a PredictionWriter")
    indices, latents = [], []
    for path in paths:
        with np.load(path) as archive:
            indices.append(archive["indices"])
            latents.append(archive["latents"])
    indices, latents = np.concatenate(indices), np.concatenate(latents)
    order = np.argsort(indices, kind="stable")
    return indices[order], latents[order]
