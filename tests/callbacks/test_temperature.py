"""TemperatureSchedule: closed forms, validation, state and integration with a Trainer."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl

from gengs_lightning.callbacks import TemperatureSchedule
from gengs_lightning.data import ToyTargets
from gengs_lightning.distributions import Prior
from gengs_lightning.estimators import GenGSExplicit
from gengs_lightning.models import ToyTask


def test_closed_forms():
    exponential = TemperatureSchedule("exponential", tau0=2.0, tau_min=0.5, rate=0.1)
    assert exponential.temperature(0) == 2.0
    assert exponential.temperature(5) == pytest.approx(2.0 * math.exp(-0.5))
    assert exponential.temperature(1000) == 0.5
    linear = TemperatureSchedule("linear", tau0=1.0, tau_min=0.2, total_steps=100)
    assert [linear.temperature(s) for s in (0, 50, 100, 500)] == pytest.approx([1.0, 0.6, 0.2, 0.2])
    cosine = TemperatureSchedule("cosine", tau0=1.0, tau_min=0.2, total_steps=100)
    assert [cosine.temperature(s) for s in (0, 50, 100, 500)] == pytest.approx([1.0, 0.6, 0.2, 0.2])
    assert cosine.temperature(25) == pytest.approx(0.2 + 0.4 * (1 + math.cos(math.pi / 4)))
    assert TemperatureSchedule("constant", tau0=0.7).temperature(12345) == 0.7


def test_interval_makes_the_schedule_piecewise_constant():
    schedule = TemperatureSchedule("exponential", tau0=1.0, tau_min=0.01, rate=0.01, interval=100)
    assert schedule.temperature(0) == schedule.temperature(99) == 1.0
    assert schedule.temperature(100) == schedule.temperature(199) == pytest.approx(math.exp(-1.0))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "sine"}, "unknown temperature schedule 'sine'; accepted: constant, exponential, linear, cosine"),
        ({"tau0": 0.0}, "tau0 (the starting temperature) must be a finite number > 0, got 0.0"),
        ({"tau0": -1.0}, "got -1.0"),
        ({"tau_min": float("nan")}, "got nan"),
        ({"rate": -0.1}, "rate must be a finite number >= 0, got -0.1"),
        ({"tau_min": True}, "tau_min (the final temperature) must be a finite number > 0, got True"),
        ({"rate": True}, "rate must be a finite number >= 0, got True"),
        ({"total_steps": 0}, "total_steps (or None for the trainer's estimate) must be an integer >= 1, got 0"),
        ({"total_steps": True}, "total_steps (or None for the trainer's estimate) must be an integer >= 1, got True"),
        ({"interval": 0}, "interval must be an integer >= 1, got 0"),
        ({"interval": True}, "interval must be an integer >= 1, got True"),
    ],
)
def test_bad_arguments_are_rejected(kwargs, message):
    with pytest.raises(ValueError) as error:
        TemperatureSchedule(**kwargs)
    assert message in str(error.value)


def test_state_keeps_resolved_values_but_explicit_arguments_win():
    saved = TemperatureSchedule("linear")
    saved.tau0, saved.total_steps = 2.0, 300
    restored = TemperatureSchedule("linear")
    restored.load_state_dict(saved.state_dict())
    assert (restored.tau0, restored.total_steps) == (2.0, 300)
    explicit = TemperatureSchedule("linear", tau0=1.5, total_steps=50)
    explicit.load_state_dict(saved.state_dict())
    assert (explicit.tau0, explicit.total_steps) == (1.5, 50)


def test_schedule_drives_the_estimator_and_takes_tau0_and_total_steps_from_training():
    estimator = GenGSExplicit(window=60, tau=2.0)
    task = ToyTask(estimator, Prior("poisson", {"rate": 20.0}), grad_every=0)
    schedule = TemperatureSchedule("linear", tau_min=0.5)
    trainer = pl.Trainer(
        max_steps=30, callbacks=[schedule], logger=False, enable_checkpointing=False, enable_progress_bar=False
    )
    trainer.fit(task, ToyTargets(num_targets=10))
    assert schedule.tau0 == 2.0 and schedule.total_steps == 30
    assert estimator.tau.item() == pytest.approx(schedule.temperature(29))


def test_a_model_without_a_temperature_is_left_alone_by_a_constant_schedule_and_refused_by_a_decaying_one():
    class Plain(pl.LightningModule):
        pass

    TemperatureSchedule().setup(None, Plain(), "fit")
    TemperatureSchedule().on_train_batch_start(None, Plain(), None, 0)  # nothing to set, no error
    with pytest.raises(ValueError, match="--temperature.kind exponential: Plain has no estimator with a temperature"):
        TemperatureSchedule("exponential").setup(None, Plain(), "fit")


def test_schedule_leaves_an_estimator_that_learns_its_temperature_alone():
    from gengs_lightning.estimators import REBAR

    estimator = REBAR(window=60, tau=0.7)
    task = ToyTask(estimator, Prior("poisson", {"rate": 20.0}), grad_every=0)
    schedule = TemperatureSchedule("exponential", tau0=5.0, tau_min=2.0, rate=1.0)
    trainer = pl.Trainer(
        max_steps=3, callbacks=[schedule], logger=False, enable_checkpointing=False, enable_progress_bar=False
    )
    with pytest.warns(UserWarning, match="REBAR learns its own temperature; the schedule has no effect"):
        trainer.fit(task, ToyTargets(num_targets=10))
    assert estimator.tau.item() < 2.0  # the learned value (started at 0.7), not the schedule's (>= 2)
