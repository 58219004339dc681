"""A training DataLoader whose order is a function of (seed, epoch) and that a checkpoint resumes mid-epoch.

Lightning saves the ``state_dict`` of every training DataLoader that has one in its checkpoints and hands it
back through ``load_state_dict`` before it iterates the loader again (its "stateful dataloader" protocol).
:class:`ResumableDataLoader` keeps there the epoch and the number of batches it has yielded in it, so a run
resumed from a mid-epoch checkpoint sees the rest of the interrupted epoch in the same order, and a run
resumed at an epoch end sees the next epoch's order. It never draws from the global torch generator (the
shuffle has its own seed, worker seeds a private generator), so iterating it does not shift the noise
that the model draws.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler


class EpochSampler(DistributedSampler):
    """A rank's share of the dataset, shuffled with ``seed + epoch``, from a start position.

    A :class:`~torch.utils.data.DistributedSampler` given ``num_replicas`` and ``rank`` (1 and 0 for one
    process), so it needs no process group and Lightning keeps it under DDP instead of injecting its own.
    Its epoch is set by :class:`ResumableDataLoader`, which counts epochs itself: after a resume from an
    end-of-epoch checkpoint Lightning's own count, which it passes to ``set_epoch``, is one ahead
    (pytorch-lightning 2.6 runs the finished epoch's end again).

    Args:
        dataset: The dataset.
        num_replicas: Number of ranks.
        rank: This rank.
        shuffle: Whether to shuffle (with ``seed + epoch``).
        seed: Seed of the shuffle.
    """

    def __init__(self, dataset: Dataset, num_replicas: int = 1, rank: int = 0, shuffle: bool = True, seed: int = 0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        """Ignore Lightning's epoch count (see the class docstring); :meth:`use_epoch` sets the epoch."""

    def use_epoch(self, epoch: int, start: int = 0) -> None:
        """Draw the order of ``epoch`` on the next iteration and skip its first ``start`` indices."""
        self.epoch = epoch
        self.start = start

    def __iter__(self) -> Iterator[int]:
        return iter(list(super().__iter__())[self.start :])


class ResumableDataLoader(DataLoader):
    """A DataLoader over an :class:`EpochSampler` that a Lightning checkpoint resumes mid-epoch in the same order.

    Every iteration is an epoch: the first one epoch 0, each later one the next, in the order
    :class:`EpochSampler` draws for it. The state is ``{"epoch": e, "batches": k}``, ``k`` batches of
    epoch ``e`` yielded; after :meth:`load_state_dict` the next iteration continues epoch ``e`` after its
    ``k``-th batch, or starts epoch ``e + 1`` if ``e`` was complete (``k`` batches are the trainer's
    ``num_training_batches``, which ``limit_train_batches`` may make fewer than the loader's length).
    Lightning does not prefetch from sized loaders, so the batches yielded when a checkpoint is written are
    the batches trained on.

    Args:
        dataset: The dataset.
        sampler: The sampler (its seed also seeds the workers' base seeds).
        batch_size: Batch size (``None``: every item is a batch).
        trainer: The trainer that iterates the loader, for the length of its epochs (``None``: the loader's).
        **kwargs: Further :class:`~torch.utils.data.DataLoader` arguments (no ``shuffle``, ``sampler`` or
            ``generator``).
    """

    def __init__(
        self,
        dataset: Dataset,
        sampler: EpochSampler,
        batch_size: int | None = 1,
        trainer: pl.Trainer | None = None,
        **kwargs: Any,
    ):
        generator = torch.Generator().manual_seed(sampler.seed)
        super().__init__(dataset, batch_size=batch_size, sampler=sampler, generator=generator, **kwargs)
        self.trainer = trainer
        self._epoch = -1
        self._batches = 0
        self._loaded: tuple[int, int] | None = None

    @classmethod
    def for_trainer(
        cls, dataset: Dataset, trainer: pl.Trainer | None, shuffle: bool, batch_size: int | None = 1, **kwargs: Any
    ) -> ResumableDataLoader:
        """A loader of this rank's share for ``trainer`` (all of it without one), seeded like Lightning's samplers.

        The shuffle seed is the one :func:`pytorch_lightning.seed_everything` exports (``PL_GLOBAL_SEED``,
        0 without one), the seed of Lightning's own distributed samplers: the same on every rank, so the
        ranks' shares do not overlap, and a different order for every ``seed_everything``.
        """
        world_size, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
        sampler = EpochSampler(dataset, world_size, rank, shuffle=shuffle, seed=seed)
        return cls(dataset, sampler, batch_size, trainer, **kwargs)

    def __iter__(self) -> Iterator[Any]:
        self._start_epoch()
        self.sampler.use_epoch(self._epoch, start=self._batches * (self.batch_size or 1))
        for batch in super().__iter__():
            self._batches += 1
            yield batch

    def _start_epoch(self) -> None:
        """Continue a loaded epoch that has batches left, else start the next epoch."""
        if self._loaded is not None:
            (self._epoch, self._batches), self._loaded = self._loaded, None
            if self._epoch >= 0 and self._batches < self._epoch_length():
                return
        self._epoch, self._batches = self._epoch + 1, 0

    def _epoch_length(self) -> float:
        """Batches in an epoch: the loader's length, or fewer if the trainer limits them."""
        limit = self.trainer.num_training_batches if self.trainer is not None else float("inf")
        return min(len(self), limit)

    def state_dict(self) -> dict[str, int]:
        """The epoch and the batches of it yielded so far."""
        return {"epoch": self._epoch, "batches": self._batches}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        """Continue from a :meth:`state_dict` on the next iteration."""
        self._loaded = (int(state_dict["epoch"]), int(state_dict["batches"]))
