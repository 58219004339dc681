"""Exact resumption: a run resumed from a checkpoint continues the uninterrupted run step for step."""

from __future__ import annotations

import random
import warnings
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities import rank_zero_warn

#: One process's random state: torch (CPU and the current CUDA device), numpy and Python ``random``.
RandomState = dict[str, Any]


class ExactResume(Callback):
    """Save every rank's random state in checkpoints and restore it, and the logging step, on resume.

    What a resumed run needs to draw the noise of the uninterrupted one:

    * **Random states, per rank.** Checkpoints otherwise hold no random state and the resumed run would
      re-seed from ``seed_everything``. :meth:`state_dict` gathers the state of every DDP rank (Lightning
      writes the checkpoint from rank 0 only; every rank builds it, so the gather is collective) and
      :meth:`load_state_dict` gives each rank its own, when fitting. It is restored at load, which
      Lightning does after ``setup`` (so after :meth:`DiscreteLatentModule.setup
      <gengs_lightning.models.DiscreteLatentModule.setup>` re-seeds every rank) and before anything draws
      for training: the sanity check runs under ``isolate_rng``, and loaders that draw nothing from the
      global generator (:class:`~gengs_lightning.data.resumable.ResumableDataLoader`) are iterated after
      it. The state is the one at the save, so what the uninterrupted run draws between the save and the
      next batch (the end of an epoch, the next epoch's loader) the resumed run draws too.
    * **Validation leaves the training noise alone.** The random state is put back after every validation
      during fit (and a checkpoint written during one holds the state from before it), because a resumed
      run does not repeat a validation that ran after its checkpoint was written (Lightning skips it): so
      the training noise never depends on whether, or how often, validation ran.
    * **The logging step.** After a resume from a checkpoint written at the end of an epoch,
      pytorch-lightning 2.6 logs one step ahead (it skips the epoch's finished validation but still
      counts a batch). The step the next batch logs at is saved and set again before it.
    * **The data order** is the training loader's: :class:`~gengs_lightning.data.resumable.ResumableDataLoader`
      resumes mid-epoch in the same order. Resuming mid-epoch with a loader Lightning cannot resume
      restarts the epoch's data; the callback then warns once that the run is not an exact continuation.

    Every model of the package adds this callback itself (:class:`ExactResumeMixin`), so it is in every
    trainer that fits one, from the CLI or not.
    """

    def __init__(self) -> None:
        self._trainer: pl.Trainer | None = None
        self._loaded = False
        self._log_step: int | None = None
        self._before_validation: RandomState | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        """Every rank's random state, and the logging step of the next batch."""
        trainer = self._trainer
        if trainer is None or trainer.state.fn != TrainerFn.FITTING:
            return {}
        state = self._before_validation if self._before_validation is not None else random_state()
        return {"random_states": _gather(trainer, state), "log_step": _next_log_step(trainer)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore this rank's random state (when fitting) and keep the logging step for the next batch."""
        trainer = self._trainer
        if trainer is None or trainer.state.fn != TrainerFn.FITTING or not state_dict:
            return
        states = state_dict["random_states"]
        rank = trainer.global_rank
        if rank < len(states):
            set_random_state(states[rank])
        else:  # every rank from here on warns, not only rank zero
            warnings.warn(
                f"The checkpoint holds the random states of {len(states)} rank(s); rank {rank} and above keep "
                "their seeded states, so the resumed run draws other noise than the uninterrupted one.",
                stacklevel=2,
            )
        self._log_step = int(state_dict["log_step"])
        self._loaded = True

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.ckpt_path is None:
            return
        if not self._loaded:
            rank_zero_warn(
                f"The checkpoint {trainer.ckpt_path} holds no random state (it was written without "
                f"{type(self).__name__}); the resumed run draws other noise than the uninterrupted one."
            )
        loop = trainer.fit_loop.epoch_loop
        done = loop.batch_progress.current.ready
        if 0 < done < trainer.num_training_batches and not _resumable(trainer):
            rank_zero_warn(
                f"Resuming mid-epoch (batch {done} of epoch {trainer.current_epoch}, global step "
                f"{trainer.global_step}) with a training DataLoader that has no state_dict/load_state_dict: it "
                "restarts the epoch's data, so this run is not an exact continuation of the interrupted one. "
                "Resume from an end-of-epoch checkpoint, or use gengs_lightning.data.resumable.ResumableDataLoader."
            )

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            self._before_validation = random_state()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._before_validation is not None:
            set_random_state(self._before_validation)
            self._before_validation = None

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int):
        if self._log_step is not None:
            trainer.fit_loop.epoch_loop._batches_that_stepped = self._log_step
            self._log_step = None


class ExactResumeMixin:
    """A LightningModule mixin that adds :class:`ExactResume` to every trainer fitting the module.

    Put it before :class:`~pytorch_lightning.LightningModule` in the bases (``class M(ExactResumeMixin,
    pl.LightningModule)``). :class:`~gengs_lightning.models.DiscreteLatentModule` and
    :class:`~gengs_lightning.models.NVDM` use it, so every model of the package resumes exactly.
    """

    def configure_callbacks(self) -> list[Callback]:
        """The other bases' callbacks and :class:`ExactResume`, so that a resumed fit continues exactly.

        Added by the model rather than by the CLI so that every trainer fitting it has the callback (a
        config's ``trainer.callbacks`` list cannot drop it).
        """
        return [*super().configure_callbacks(), ExactResume()]


def _next_log_step(trainer: pl.Trainer) -> int:
    """The logging step of the next training batch.

    Lightning counts a batch in the logging step at the very end of the batch, after its
    ``on_train_batch_end`` and after a validation it runs: a checkpoint written in either has not counted
    the last batch yet; one written at the end of the epoch has.
    """
    epoch_loop = trainer.fit_loop.epoch_loop
    progress = epoch_loop.batch_progress.total
    uncounted = progress.processed > progress.completed or trainer.validating
    return epoch_loop._batches_that_stepped + int(uncounted)


def _resumable(trainer: pl.Trainer) -> bool:
    """Whether Lightning can resume every training loader mid-epoch (it has ``state_dict``/``load_state_dict``)."""
    loaders = trainer.fit_loop._combined_loader.flattened
    return all(hasattr(loader, "state_dict") and hasattr(loader, "load_state_dict") for loader in loaders)


def _gather(trainer: pl.Trainer, state: RandomState) -> list[RandomState]:
    """Every rank's ``state``, in rank order (a collective call under DDP)."""
    if trainer.world_size == 1 or not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return [state]
    states: list[RandomState | None] = [None] * trainer.world_size
    torch.distributed.all_gather_object(states, state)
    return states


def random_state() -> RandomState:
    """The random state of this process, as tensors and numbers (loadable with ``torch.load(weights_only=True)``)."""
    key, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state() if cuda else None,
        "numpy": {
            "key": key,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "position": position,
            "has_gauss": has_gauss,
            "cached_gaussian": cached_gaussian,
        },
        "python": random.getstate(),
    }


def set_random_state(state: RandomState) -> None:
    """Restore a :func:`random_state` in this process (the CUDA state on the current device)."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    numpy = state["numpy"]
    keys = numpy["keys"].numpy().astype(np.uint32)
    np.random.set_state((numpy["key"], keys, numpy["position"], numpy["has_gauss"], numpy["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
