"""Checks of every training step that read the device only on the steps that write logs."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytorch_lightning as pl
import torch
from torch import Tensor


class FirstStepWatch:
    """Remember, on the device, the first step since the last :meth:`pop` where a value was bad.

    Reading a loss on the host (``float(loss)``) every step waits for the device to finish the step, so
    the host cannot queue the next one behind it. Here a step adds the test and two ``torch.where`` on the
    device and a tuple on the host (where the step is); the host reads the result when it asks
    (:meth:`pop`), on the steps that write logs, and learns the first bad step and the value there. A CPU
    value has nothing queued behind it and is read and tested at once (cheaper than the device ops).

    Args:
        is_bad: The test on the host, for CPU values (e.g. ``lambda x: not math.isfinite(x)``).
        is_bad_on_device: The same test on a 0-d tensor, giving a 0-d bool tensor (e.g. ``~torch.isfinite(t)``).
    """

    def __init__(self, is_bad: Callable[[float], bool], is_bad_on_device: Callable[[Tensor], Tensor]) -> None:
        self.is_bad, self.is_bad_on_device = is_bad, is_bad_on_device
        self._reset()

    def _reset(self) -> None:
        self._found: tuple[tuple[int, ...], float] | None = None
        self._places: list[tuple[int, ...]] = []
        self._first: Tensor | None = None
        self._value: Tensor | None = None

    def update(self, value: Tensor, place: tuple[int, ...]) -> None:
        """Record one step's ``value`` (0-d, any device) and where the step is (returned by :meth:`pop`)."""
        value = value.detach()
        if value.device.type == "cpu":
            if self._found is None and self.is_bad(number := float(value)):
                self._found = (place, number)
            return
        index = len(self._places)
        self._places.append(place)
        value = value.float()
        if self._first is None:
            self._first = torch.full((), -1, dtype=torch.long, device=value.device)
            self._value = torch.zeros((), device=value.device)
        first = self.is_bad_on_device(value) & (self._first < 0)
        self._first = torch.where(first, index, self._first)
        self._value = torch.where(first, value, self._value)

    def pop(self) -> tuple[tuple[int, ...], float] | None:
        """The place and value of the first bad step since the last call, or ``None``.

        Reads the device once and forgets the steps recorded so far.
        """
        found = self._found
        if found is None and self._first is not None and (index := int(self._first)) >= 0:
            found = (self._places[index], float(self._value))
        self._reset()
        return found


def non_finite_watch() -> FirstStepWatch:
    """A :class:`FirstStepWatch` for NaN or infinite values (losses)."""
    return FirstStepWatch(lambda number: not math.isfinite(number), lambda value: ~torch.isfinite(value))


def above_watch(threshold: float) -> FirstStepWatch:
    """A :class:`FirstStepWatch` for values above ``threshold``."""
    return FirstStepWatch(lambda number: number > threshold, lambda value: value > threshold)


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
        watch: A :func:`non_finite_watch` updated every step with the loss and ``(global step, epoch, batch)``.
        advice: What to try, appended to the message.

    Raises:
        FloatingPointError: If a loss was not finite.
    """
    found = watch.pop()
    if found is not None:
        (step, epoch, batch), value = found
        raise FloatingPointError(f"loss is {value} at global step {step}, epoch {epoch}, batch {batch}; {advice}")
