"""The step checks that read the device only when asked: the first step where a value was bad."""

import pytest
import torch

from gengs_lightning.models.step_watch import above_watch, non_finite_watch

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_pop_gives_the_first_bad_step_and_forgets(device):
    watch = non_finite_watch()
    for step, loss in enumerate([1.0, 2.0, float("nan"), float("inf"), float("nan")]):
        watch.update(torch.tensor(loss, device=device), (step, 0, step))
    place, value = watch.pop()
    assert place == (2, 0, 2) and value != value  # the first bad step, its value NaN
    assert watch.pop() is None  # forgotten: nothing recorded since
    watch.update(torch.tensor(3.0, device=device), (5, 1, 0))
    assert watch.pop() is None
    watch.update(torch.tensor(float("-inf"), device=device), (6, 1, 1))
    assert watch.pop() == ((6, 1, 1), float("-inf"))


@pytest.mark.parametrize("device", DEVICES)
def test_above_a_threshold(device):
    watch = above_watch(0.5)
    for step, mass in enumerate([0.1, 0.5, 0.7, 0.9]):
        watch.update(torch.tensor(mass, device=device), (step,))
    assert watch.pop() == ((2,), pytest.approx(0.7))
