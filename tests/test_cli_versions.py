"""Runs started at once into one log folder get their own ``version_N`` (and keep their own config)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import pytorch_lightning as pl
import yaml
from helpers import CONFIGS, run_ddp_fit

from gengs_lightning.cli import DEFAULT_LOGGER, main
from gengs_lightning.loggers import TensorBoardLogger

QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def _versions(root: Path) -> list[str]:
    return sorted(path.name for path in root.iterdir())


def test_threads_listing_the_same_versions_at_once_claim_distinct_ones(tmp_path, monkeypatch):
    """Every thread lists the folder before any of them creates its version: the classic race."""
    (tmp_path / "run" / "version_0").mkdir(parents=True)
    threads = 4
    barrier = threading.Barrier(threads)
    listing = pl.loggers.TensorBoardLogger._get_next_version

    def list_then_wait(self):
        version = listing(self)
        barrier.wait(timeout=30)
        return version

    monkeypatch.setattr(pl.loggers.TensorBoardLogger, "_get_next_version", list_then_wait)
    loggers = [TensorBoardLogger(tmp_path, name="run") for _ in range(threads)]
    versions = [None] * threads

    def claim(index: int) -> None:
        versions[index] = loggers[index].version

    workers = [threading.Thread(target=claim, args=(index,)) for index in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert sorted(versions) == [1, 2, 3, 4]
    assert _versions(tmp_path / "run") == [f"version_{k}" for k in range(5)]
    assert all(Path(logger.log_dir).is_dir() for logger in loggers)


def test_two_runs_that_chose_a_version_at_the_same_moment_keep_their_own_config(tmp_path, monkeypatch):
    """Both runs see the same existing versions (none), as if both listed the folder before either wrote."""
    monkeypatch.setattr(pl.loggers.TensorBoardLogger, "_get_next_version", lambda self: 0)
    args = ["fit", "--config", str(CONFIGS / "toy" / "poisson.yaml"), f"--trainer.logger.init_args.save_dir={tmp_path}"]
    for steps in (2, 3):
        main([*args, f"--trainer.max_steps={steps}", *QUIET])
    (root,) = tmp_path.iterdir()
    assert _versions(root) == ["version_0", "version_1"]
    for version, steps in (("version_0", 2), ("version_1", 3)):
        config = yaml.safe_load((root / version / "config.yaml").read_text())
        assert config["trainer"]["max_steps"] == steps
        assert (root / version / "hparams.yaml").is_file()


RUN_CONFIGS = [path for path in sorted(CONFIGS.rglob("*.yaml")) if path.parent.name != "trainer"]


@pytest.mark.parametrize("config", RUN_CONFIGS, ids=lambda path: f"{path.parent.name}/{path.stem}")
def test_every_config_and_the_default_use_the_atomic_logger(config):
    logger = yaml.safe_load(config.read_text())["trainer"]["logger"]
    assert logger["class_path"] == DEFAULT_LOGGER["class_path"] == "gengs_lightning.loggers.TensorBoardLogger"


def test_a_plain_tensorboard_logger_still_works(tmp_path):
    cli = main(
        [
            "fit",
            "--config",
            str(CONFIGS / "toy" / "poisson.yaml"),
            "--trainer.logger=pytorch_lightning.loggers.TensorBoardLogger",
            f"--trainer.logger.save_dir={tmp_path}",
            "--trainer.logger.name=plain",
            "--trainer.max_steps=2",
            *QUIET,
        ]
    )
    assert type(cli.trainer.logger) is pl.loggers.TensorBoardLogger
    assert (tmp_path / "plain" / "version_0" / "config.yaml").is_file()


def test_under_ddp_only_rank_zero_claims_a_version(tmp_path):
    """Two processes, one version folder: rank 1 neither creates a folder nor writes elsewhere."""
    (tmp_path / "logs" / "toy_poisson" / "version_0").mkdir(parents=True)  # an earlier run
    run_ddp_fit(CONFIGS / "toy" / "poisson.yaml", tmp_path / "logs", "--trainer.max_steps=2", *QUIET, cwd=tmp_path)
    root = tmp_path / "logs" / "toy_poisson"
    assert _versions(root) == ["version_0", "version_1"]
    assert {path.name for path in (root / "version_1").iterdir()} >= {"config.yaml", "hparams.yaml", "checkpoints"}
