"""The HPARAMS columns: flat, readable values from an estimator, its configuration, the prior and the schedule."""

from __future__ import annotations

import torch

from gengs_lightning.callbacks import TemperatureSchedule
from gengs_lightning.distributions import Prior
from gengs_lightning.estimators import REBAR, GenGSExplicit, Reinforce
from gengs_lightning.hparams import (
    COLUMNS,
    estimator_hparams,
    format_value,
    metric_name,
    metric_tag,
    prior_hparams,
    schedule_hparams,
)
from gengs_lightning.models import VAE


def test_a_configured_estimator_shows_its_window_and_its_other_arguments_in_one_column():
    config = {
        "class_path": "gengs_lightning.estimators.Reinforce",
        "init_args": {"num_samples": 2, "truncation": [5, 9]},
    }
    assert estimator_hparams(Reinforce(num_samples=2, truncation=(5, 9)), config) == {
        "estimator": "Reinforce",
        "tau": 1.0,
        "num_samples": 2.0,
        "window": "[5, 9]",
    }
    config = {"init_args": {"window": 16, "tau": 0.5, "num_samples": 1, "hard": True}}
    values = estimator_hparams(GenGSExplicit(window=16, tau=0.5, hard=True), config)
    assert values == {
        "estimator": "GenGSExplicit",
        "tau": 0.5,
        "num_samples": 1.0,
        "window": "16",
        "estimator_args": "hard=True",
    }


def test_an_estimator_built_in_python_shows_what_every_estimator_has():
    assert estimator_hparams(GenGSExplicit(window=16, tau=0.5)) == {
        "estimator": "GenGSExplicit",
        "tau": 0.5,
        "num_samples": 1.0,
    }
    assert estimator_hparams(REBAR(window=8))["tau_schedule"] == "learned"


def test_a_models_latent_columns_are_flat_strings_and_numbers():
    prior = Prior("negative_binomial", {"total_count": 3, "probs": [0.5, 0.25]})
    model = VAE(GenGSExplicit(window=8), prior, data_dim=4, latent_dim=2, encoder_hidden=[3], image_shape=None)
    values = model.latent_hparams()
    assert values["prior"] == "negative_binomial(total_count=3, probs=[0.5, 0.25])"
    assert values["latent"] == "negative_binomial"
    assert set(values) <= set(COLUMNS) and all(isinstance(v, (str, float)) for v in values.values())
    assert prior_hparams(Prior("poisson", {"rate": 2.0})) == {"latent": "poisson", "prior": "poisson(rate=2)"}


def test_schedules_metrics_and_values_read_as_a_user_wrote_them():
    assert schedule_hparams(TemperatureSchedule()) == "constant"
    assert schedule_hparams(TemperatureSchedule("exponential", rate=5e-4, tau_min=0.5)) == (
        "exponential(tau_min=0.5, rate=0.0005)"
    )
    assert schedule_hparams(TemperatureSchedule("cosine", total_steps=100, interval=10)) == (
        "cosine(tau_min=0.1, total_steps=100, interval=10)"
    )
    assert (metric_tag("val/perplexity"), metric_tag("test/nll_iw")) == ("hp/best_val_perplexity", "hp/test_nll_iw")
    assert (metric_name("val/loss"), metric_name("test/loss")) == ("best val/loss", "test/loss")
    assert format_value(torch.tensor([0.5, 1 / 3])) == "[0.5, 0.333333]"
    assert format_value(None) == "None"
