"""Every registered estimator trains the toy task, the VAE and NVPDEF through the command line, by one flag."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import CONFIGS, event_dirs, read_scalars

import gengs_lightning.estimators as estimators
from gengs_lightning.cli import main
from gengs_lightning.estimators.registry import class_path, registered

QUIET = [
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--trainer.log_every_n_steps=1",
]


def estimator_flags(cls: type[estimators.Estimator]) -> list[str]:
    """The flags an estimator needs on top of a configuration: the configs' num_samples=1 carries over, so
    those that need more samples (:attr:`~gengs_lightning.estimators.Estimator.min_samples`) get one more."""
    return [] if cls.min_samples == 1 else [f"--model.estimator.init_args.num_samples={cls.min_samples + 1}"]


#: Every registered estimator by class path.
ESTIMATORS = {class_path(cls): cls for cls in registered()}


def test_the_registry_holds_every_exported_estimator():
    """Every concrete estimator the package exports is registered, or is the shared base of registered ones."""
    exported = [
        getattr(estimators, name)
        for name in estimators.__all__
        if isinstance(getattr(estimators, name), type)
        and issubclass(getattr(estimators, name), estimators.Estimator)
        and not getattr(estimators, name).__abstractmethods__
    ]
    missing = [
        cls for cls in exported if cls not in registered() and not any(issubclass(other, cls) for other in registered())
    ]
    assert not missing


def write_corpus(folder):
    generator = torch.Generator().manual_seed(0)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.new").write_text("".join(f"w{i} 0\n" for i in range(30)))
    for name in ("train.feat", "test.feat"):
        lines = [
            "1 "
            + " ".join(
                f"{i + 1}:{c}"
                for i, c in enumerate(torch.randint(0, 30, (25,), generator=generator).bincount(minlength=30).tolist())
                if c
            )
            for _ in range(60)
        ]
        (folder / name).write_text("\n".join(lines) + "\n")
    return folder


def run(config: str, estimator: str, tmp_path, *extra: str):
    """``fit`` of ``config`` with the estimator of class path ``estimator``; the training losses must be finite."""
    cli = main(
        [
            "fit",
            "--config",
            str(CONFIGS / config),
            f"--model.estimator={estimator}",
            *estimator_flags(ESTIMATORS[estimator]),
            f"--trainer.logger.init_args.save_dir={tmp_path}",
            *QUIET,
            *extra,
        ]
    )
    (log_dir,) = event_dirs(tmp_path)
    losses = [value for _, value in read_scalars(log_dir)["train/loss"]]
    assert losses and all(map(math.isfinite, losses)), (estimator, config, losses)
    return cli


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda path: path.rpartition(".")[2])
def test_toy_task(estimator, tmp_path):
    run(
        "toy/poisson.yaml",
        estimator,
        tmp_path,
        "--trainer.max_steps=4",
        "--model.init_args.grad_every=2",
        "--model.init_args.grad_draws=4",
    )


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda path: path.rpartition(".")[2])
def test_vae(estimator, tmp_path):
    cli = run(
        "vae/digits_poisson2.yaml",
        estimator,
        tmp_path,
        "--trainer.max_steps=3",
        "--trainer.limit_val_batches=1",
        "--trainer.limit_test_batches=1",
        "--model.init_args.iw_samples=5",
    )
    assert math.isfinite(cli.trainer.callback_metrics["test/nll_iw"])


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda path: path.rpartition(".")[2])
def test_nvpdef_two_layers(estimator, tmp_path):
    corpus = write_corpus(tmp_path / "corpus")
    cli = run(
        "nvpdef/20news_stacked.yaml",
        estimator,
        tmp_path,
        f"--data.data_dir={corpus}",
        "--data.init_args.val_size=10",
        "--model.init_args.vocab_size=30",
        "--model.init_args.topics=[4, 2]",
        "--model.init_args.hidden=[8]",
        "--model.estimator.init_args.num_samples=2",
        "--trainer.max_steps=3",
        "--trainer.limit_val_batches=1",
        "--trainer.limit_test_batches=1",
        "--model.init_args.top_words=3",
    )
    assert math.isfinite(cli.trainer.callback_metrics["test/perplexity"])
