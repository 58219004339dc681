"""``predict`` writes the latents; ``validate``, ``test`` and ``predict`` of a checkpoint log into its run."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import CONFIGS, cli_env

from gengs_lightning.callbacks import PredictionWriter, read_predictions
from gengs_lightning.cli import main
from gengs_lightning.data import Digits

DIGITS = CONFIGS / "vae" / "digits_poisson2.yaml"
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
WINDOW = 16  # the digits config's GenGSImplicit window: counts 0..15
LATENT_DIM = 8


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> Path:
    """A digits VAE trained for a few steps; returns its save folder (the run is ``vae_digits_poisson2/version_0``)."""
    save_dir = tmp_path_factory.mktemp("logs")
    main(
        [
            "fit",
            "--config",
            str(DIGITS),
            f"--trainer.logger.init_args.save_dir={save_dir}",
            "--trainer.max_steps=3",
            "--trainer.limit_val_batches=1",
            "--test_after_fit=false",
            *QUIET,
        ]
    )
    return save_dir


def _run(save_dir: Path) -> Path:
    return save_dir / "vae_digits_poisson2" / "version_0"


def _evaluate(subcommand: str, save_dir: Path, *extra: str):
    checkpoint = _run(save_dir) / "checkpoints" / "last.ckpt"
    args = ["--config", str(DIGITS), f"--trainer.logger.init_args.save_dir={save_dir}", f"--ckpt_path={checkpoint}"]
    return main([subcommand, *args, "--model.init_args.iw_samples=2", *QUIET, *extra])


def test_predict_writes_each_examples_latents_with_its_index(fitted):
    cli = _evaluate("predict", fitted)
    path = _run(fitted) / "predict" / "predictions_rank0.npz"
    with np.load(path, allow_pickle=False) as archive:
        assert sorted(archive.files) == ["indices", "latents"]
        indices, latents = archive["indices"], archive["latents"]
    num_examples = len(cli.datamodule.test_data)
    assert indices.dtype == latents.dtype == np.int64
    assert sorted(indices.tolist()) == list(range(num_examples))  # every example once
    assert latents.shape == (num_examples, 1, LATENT_DIM)  # (N, S, D)
    assert 0 <= latents.min() and latents.max() < WINDOW
    assert len(np.unique(latents)) > 1  # samples, not a constant
    assert torch.from_numpy(latents).shape == latents.shape
    read_indices, read_latents = read_predictions(path.parent)
    assert read_indices.tolist() == list(range(num_examples))
    assert np.array_equal(read_latents[indices], latents)


def test_a_listed_prediction_writer_replaces_the_default(fitted, tmp_path):
    cli = _evaluate(
        "predict",
        fitted,
        "--trainer.callbacks+=gengs_lightning.callbacks.PredictionWriter",
        f"--trainer.callbacks.dirpath={tmp_path / 'mine'}",
    )
    writers = [callback for callback in cli.trainer.callbacks if isinstance(callback, PredictionWriter)]
    assert len(writers) == 1
    assert (tmp_path / "mine" / "predictions_rank0.npz").is_file()


@pytest.mark.parametrize("subcommand", ["validate", "test"])
def test_evaluating_a_checkpoint_logs_into_its_run(fitted, subcommand):
    config_before = (_run(fitted) / "config.yaml").read_text()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cli = _evaluate(subcommand, fitted)
    assert not [w for w in caught if "dirpath has changed" in str(w.message)]
    assert sorted(path.name for path in _run(fitted).parent.iterdir()) == ["version_0"]  # no new version
    assert Path(cli.trainer.log_dir) == _run(fitted) / subcommand
    assert list((_run(fitted) / subcommand).glob("events.out.tfevents.*"))
    assert (_run(fitted) / subcommand / "config.yaml").is_file()
    assert (_run(fitted) / "config.yaml").read_text() == config_before  # the training run's config is kept


def test_a_checkpoint_outside_the_save_folder_gets_a_new_version_there(fitted, tmp_path):
    cli = _evaluate("test", fitted, f"--trainer.logger.init_args.save_dir={tmp_path}")
    assert Path(cli.trainer.log_dir) == tmp_path / "vae_digits_poisson2" / "version_0"


def test_predict_under_ddp_writes_one_file_per_rank(fitted, tmp_path):
    checkpoint = _run(fitted) / "checkpoints" / "last.ckpt"
    env = cli_env()
    command = [
        sys.executable,
        "-m",
        "gengs_lightning",
        "predict",
        "--config",
        str(DIGITS),
        "--config",
        str(CONFIGS / "trainer" / "ddp_cpu.yaml"),
        f"--trainer.logger.init_args.save_dir={tmp_path}",
        f"--ckpt_path={checkpoint}",
        *QUIET,
    ]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (folder,) = {path.parent for path in tmp_path.rglob("predictions_rank*.npz")}
    ranks = []
    for rank in (0, 1):
        with np.load(folder / f"predictions_rank{rank}.npz") as archive:
            ranks.append(set(archive["indices"].tolist()))
    assert ranks[0] and ranks[1] and not ranks[0] & ranks[1]  # each example predicted by one rank
    indices, latents = read_predictions(folder)
    num_examples = len(Digits().read_splits()[2])
    assert indices.tolist() == list(range(num_examples))
    assert latents.shape == (num_examples, 1, LATENT_DIM)
