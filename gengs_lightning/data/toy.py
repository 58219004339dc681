"""Targets of the toy task, drawn once from a seed."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from gengs_lightning.checks import check_int
from gengs_lightning.data.resumable import ResumableDataLoader


class _RepeatedTargets(Dataset):
    """The same target vector as every item: one item is one full batch of targets."""

    def __init__(self, targets: Tensor, length: int):
        self.targets = targets
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Tensor:
        return self.targets


class ToyTargets(pl.LightningDataModule):
    """Targets ``t_1..t_K ~ D(theta)`` of :class:`~gengs_lightning.models.ToyTask`, drawn once from a seed.

    ``D(theta)`` is the model's ``target`` (read in :meth:`setup`, so the distribution is configured
    once, on the model). Every training batch is the whole target vector and an epoch is
    ``steps_per_epoch`` batches; validation, test and prediction see the targets once. The draw uses
    its own generator state, so it does not depend on (or disturb) the global seed, and every DDP
    rank sees the same targets.

    Args:
        num_targets: Number of targets ``K``.
        seed: Seed of the draw.
        steps_per_epoch: Batches per epoch.

    Raises:
        ValueError: For a ``num_targets`` or ``steps_per_epoch`` that is not an integer >= 1.
    """

    def __init__(self, num_targets: int = 100, seed: int = 0, steps_per_epoch: int = 100):
        super().__init__()
        check_int("num_targets", num_targets, 1)
        check_int("steps_per_epoch", steps_per_epoch, 1)
        self.save_hyperparameters()
        self.num_targets = num_targets
        self.seed = seed
        self.steps_per_epoch = steps_per_epoch
        self.targets: Tensor | None = None

    def setup(self, stage: str) -> None:
        target = getattr(self.trainer.lightning_module, "target", None) if self.trainer else None
        if target is None:
            raise ValueError("ToyTargets needs a model with a `target` distribution, such as ToyTask")
        self.targets = self.draw(target.untruncated(), self.num_targets, self.seed)

    @staticmethod
    def draw(distribution: torch.distributions.Distribution, num_targets: int, seed: int) -> Tensor:
        """Draw ``num_targets`` values from ``distribution`` with a private seed."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return distribution.sample((num_targets,)).float()

    def train_dataloader(self) -> DataLoader:
        """``steps_per_epoch`` batches of all targets (this rank's share of them under DDP), resumable mid-epoch."""
        dataset = _RepeatedTargets(self.targets, self.steps_per_epoch)
        return ResumableDataLoader.for_trainer(dataset, self.trainer, shuffle=False, batch_size=None)

    def val_dataloader(self) -> DataLoader:
        """One batch of all targets: the loss with exact (discrete) samples."""
        return DataLoader(_RepeatedTargets(self.targets, 1), batch_size=None)

    test_dataloader = val_dataloader
    predict_dataloader = val_dataloader
