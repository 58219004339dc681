"""Checks of every training step that read the device only on the steps that write logs."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch import Tensor


class FirstStepWatch:
    """Remember, on the device, the first step since the last :meth:`pop` where a condition held.

    Reading a loss on the host (``float(loss)``) every step waits for the device to finish the step, so
    the host cannot queue the next one behind it. Here a step adds two ``torch.where`` on the device and
    a tuple on the host (where the step is); the host reads the result when it asks (:meth:`pop`), on
    the steps that write logs, and learns the first step where the condition held and its value there.
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._places: list[tuple[int, ...]] = []
        self._first: Tensor | None = None
        self._value: Tensor | None = None

    def update(self, condition: Tensor, value: Tensor, place: tuple[int, ...]) -> None:
        """Record one step: whether ``condition`` held, ``value`` and the step's place.

        Args:
            condition: The condition at this step, a 0-d bool tensor on any device.
            value: The value to report where it first held, 0-d.
            place: Where the step is (e.g. its global step, epoch and batch), returned by :meth:`pop`.
        """
        index = len(self._places)
        self._places.append(place)
        value = value.detach().float()
        if self._first is None:
            self._first = torch.full((), -1, dtype=torch.long, device=value.device)
            self._value = torch.zeros((), device=value.device)
        first = condition & (self._first < 0)
        self._first = torch.where(first, index, self._first)
        self._value = torch.where(first, value, self._value)

    def pop(self) -> tuple[tuple[int, ...], float] | None:
        """The place and value of the first step since the last call where the condition held, or ``None``.

        Reads the device once and forgets the steps recorded so far.
        """
        found = None
        if self._first is not None and (index := int(self._first)) >= 0:
            found = (self._places[index], float(self._value))
        self._reset()
        return found


def writes_logs_now(trainer: pl.Trainer, global_step: int) -> bool:
    """Whether this training step's scalars will be written: every ``log_every_n_steps``, an epoch's end, the last step.

    Lightning writes step metrics every ``log_every_n_steps`` and discards values logged in between, and
    each ``self.log`` call costs a few percent of a small model's step, so the step scalars are logged
    (and the step checks read) only when they will be written, plus on the last batch of every epoch and
    the last step (so that ``train/loss`` is in ``trainer.callback_metrics`` for callbacks and short runs).
    """
    connector = getattr(trainer, "_logger_connector", None)
    last_step = 0 < trainer.max_steps <= global_step + 1
    return bool(getattr(connector, "should_update_logs", True)) or bool(trainer.is_last_batch) or last_step


def raise_if_a_loss_was_not_finite(watch: FirstStepWatch, advice: str) -> None:
    """Stop training, naming the first step whose loss was NaN or infinite, if ``watch`` saw one.

    Args:
        watch: Updated every step with ``~isfinite(loss)`` and the place ``(global step, epoch, batch)``.
        advice: What to try, appended to the message.

    Raises:
        FloatingPointError: If a loss was not finite.
    """
    found = watch.pop()
    if found is not None:
        (step, epoch, batch), value = found
        raise FloatingPointError(f"loss is {value} at global step {step}, epoch {epoch}, batch {batch}; {advice}")
