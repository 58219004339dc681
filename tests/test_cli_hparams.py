"""TensorBoard through the CLI: whole validation curves, and one flat HPARAMS row per run for every model."""

from __future__ import annotations

from math import inf
from pathlib import Path

import pytest
from helpers import CONFIGS, event_dirs, read_scalars, write_corpus
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import metadata, plugin_data_pb2

from gengs_lightning.cli import main
from gengs_lightning.hparams import COLUMNS

QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
TINY_VAE = [
    "--trainer.max_epochs=3",
    "--trainer.limit_train_batches=3",
    "--trainer.limit_val_batches=2",
    "--trainer.limit_test_batches=1",
    "--model.init_args.iw_samples=2",
]
TOPICS = {"nvpdef": "[4]", "nvdm": "4"}


def read_hparams(log_dir: Path) -> tuple[plugin_data_pb2.HParamsPluginData, dict[str, str | float]]:
    """The hparams plugin's experiment of a run and its session's values, as TensorBoard reads them."""
    accumulator = EventAccumulator(str(log_dir))
    accumulator.Reload()
    content = accumulator.PluginTagToContent("hparams")
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content[metadata.EXPERIMENT_TAG]).experiment
    start = plugin_data_pb2.HParamsPluginData.FromString(content[metadata.SESSION_START_INFO_TAG]).session_start_info
    values = {name: value.string_value or value.number_value for name, value in start.hparams.items()}
    return experiment, values


def fit_vae(save_dir: Path) -> Path:
    main(
        [
            "fit",
            "--config",
            str(CONFIGS / "vae" / "digits_poisson2.yaml"),
            *TINY_VAE,
            f"--trainer.logger.init_args.save_dir={save_dir}",
            *QUIET,
        ]
    )
    (log_dir,) = event_dirs(save_dir)
    return log_dir


def fit_toy(save_dir: Path, *extra: str) -> Path:
    main(
        [
            "fit",
            "--config",
            str(CONFIGS / "toy" / "poisson.yaml"),
            "--trainer.max_steps=20",
            "--data.init_args.steps_per_epoch=10",
            "--model.init_args.grad_every=0",
            f"--trainer.logger.init_args.save_dir={save_dir}",
            *QUIET,
            *extra,
        ]
    )
    (log_dir,) = event_dirs(save_dir)
    return log_dir


def fit_topic_model(save_dir: Path, model: str) -> Path:
    corpus = write_corpus(save_dir / "corpus")
    main(
        [
            "fit",
            "--config",
            str(CONFIGS / model / "20news.yaml"),
            "--model.init_args.vocab_size=30",
            f"--model.init_args.topics={TOPICS[model]}",
            "--model.init_args.hidden=[16]",
            "--data.init_args.val_size=20",
            "--data.init_args.batch_size=16",
            f"--data.data_dir={corpus}",
            "--trainer.max_epochs=2",
            f"--trainer.logger.init_args.save_dir={save_dir / 'logs'}",
            *QUIET,
        ]
    )
    (log_dir,) = event_dirs(save_dir / "logs")
    return log_dir


@pytest.fixture(scope="module")
def vae_log_dir(tmp_path_factory) -> Path:
    """One tiny digits VAE run (3 epochs of 3 batches, tested after fit) shared by the VAE checks."""
    return fit_vae(tmp_path_factory.mktemp("vae"))


def test_vae_keeps_its_whole_val_loss_curve(vae_log_dir):
    steps = [step for step, _ in read_scalars(vae_log_dir)["val/loss"]]
    assert len(steps) == 3  # one point per epoch, none added afterwards
    assert steps == sorted(steps) and len(set(steps)) == len(steps)
    assert all(step > 0 for step in steps)


def test_best_val_loss_is_logged_when_it_improves_at_the_current_step(vae_log_dir):
    scalars = read_scalars(vae_log_dir)
    val_loss, best = scalars["val/loss"], scalars["hp/best_val_loss"]
    improvements = [
        (step, value)
        for i, (step, value) in enumerate(val_loss)
        if value < min((v for _, v in val_loss[:i]), default=inf)
    ]
    assert [value for _, value in best] == [value for _, value in improvements]
    best_steps = [step for step, _ in best]
    assert best_steps == sorted(set(best_steps)) and best_steps[0] > 0
    assert all(written >= validated for (written, _), (validated, _) in zip(best, improvements, strict=True))
    assert scalars["hp/test_loss"][-1][1] == pytest.approx(scalars["test/loss"][-1][1])
    assert scalars["hp/test_nll_iw"][-1][1] == pytest.approx(scalars["test/nll_iw"][-1][1])


def test_vae_hparams_row_is_flat_and_readable(vae_log_dir):
    experiment, values = read_hparams(vae_log_dir)
    assert [info.name for info in experiment.hparam_infos] == list(COLUMNS)
    tags = [info.name.tag for info in experiment.metric_infos]
    assert tags == ["hp/best_val_loss", "hp/test_loss", "hp/test_nll_iw"]
    assert values == {
        "model": "VAE",
        "data": "Digits",
        "estimator": "GenGSImplicit",
        "window": "16",
        "tau": 1.0,
        "tau_schedule": "exponential(tau_min=0.5, rate=0.0005)",
        "num_samples": 1.0,
        "estimator_args": "hard=False",
        "latent": "poisson",
        "prior": "poisson(rate=2)",
        "optimizer": "Adam",
        "lr": pytest.approx(0.001),
        "batch_size": 50.0,
        "seed": 0.0,
    }


FITS = {
    "toy": fit_toy,
    "toy_nvil": lambda save_dir: fit_toy(save_dir, "--model.estimator=gengs_lightning.estimators.NVIL"),
    "nvpdef": lambda save_dir: fit_topic_model(save_dir, "nvpdef"),
    "nvdm": lambda save_dir: fit_topic_model(save_dir, "nvdm"),
}


@pytest.mark.parametrize("name", list(FITS))
def test_every_model_has_an_hparams_row_with_its_best_validation_metric(tmp_path, name):
    log_dir = FITS[name](tmp_path)
    experiment, values = read_hparams(log_dir)
    assert [info.name for info in experiment.hparam_infos] == list(COLUMNS)  # the same columns for every run
    assert set(values) <= set(COLUMNS)
    assert not any(marker in key for key in values for marker in ("class_path", "_instantiator", "init_args", "/"))
    assert values["seed"] == 0.0 and values["lr"] > 0 and values["optimizer"] == "Adam"
    if name == "nvdm":
        assert (values["latent"], values["estimator"]) == ("gaussian", "none")
        assert not {"tau", "window", "tau_schedule"} & set(values)
    else:
        assert {"estimator", "tau", "window", "prior", "tau_schedule", "latent"} <= set(values)
    if name == "toy_nvil":
        assert values["estimator"] == "NVIL" and "baseline_lr=0.001" in values["estimator_args"]
    monitored = "val/perplexity" if name in ("nvpdef", "nvdm") else "val/loss"
    tag = "hp/best_" + monitored.replace("/", "_")
    assert tag in [info.name.tag for info in experiment.metric_infos]
    scalars = read_scalars(log_dir)
    assert scalars[tag][-1][1] == pytest.approx(min(value for _, value in scalars[monitored]))
    assert all(step > 0 for step, _ in scalars[monitored])


def test_a_resumed_fit_logs_its_best_so_far_at_the_step_it_resumes_from(tmp_path):
    first = fit_toy(tmp_path / "first")
    best_so_far = min(value for _, value in read_scalars(first)["val/loss"])
    checkpoint = next(first.rglob("*.ckpt"))
    resumed = fit_toy(tmp_path / "resumed", "--trainer.max_steps=30", f"--ckpt_path={checkpoint}")
    best = read_scalars(resumed)["hp/best_val_loss"]
    assert best[0] == (20, pytest.approx(best_so_far))  # the checkpoint's best, at its step
    assert [step for step, _ in best] == sorted({step for step, _ in best})
    assert all(later < earlier for (_, earlier), (_, later) in zip(best, best[1:], strict=False))
