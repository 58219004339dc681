"""The step checks that read the device only when asked: first step where a condition held."""

import torch

from gengs_lightning.models.step_watch import FirstStepWatch


def test_pop_gives_the_first_step_where_the_condition_held_and_forgets():
    watch = FirstStepWatch()
    losses = [1.0, 2.0, float("nan"), float("inf"), float("nan")]
    for step, loss in enumerate(losses):
        loss = torch.tensor(loss)
        watch.update(~torch.isfinite(loss), loss, (step, 0, step))
    place, value = watch.pop()
    assert place == (2, 0, 2) and value != value  # the first bad step, its value NaN
    assert watch.pop() is None  # forgotten: nothing recorded since
    watch.update(torch.tensor(False), torch.tensor(3.0), (5, 1, 0))
    assert watch.pop() is None
    watch.update(torch.tensor(True), torch.tensor(7.0), (6, 1, 1))
    assert watch.pop() == ((6, 1, 1), 7.0)
