"""A run stopped at a checkpoint and resumed with ``--ckpt_path`` logs what the uninterrupted run logs, step for step."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from helpers import CONFIGS, event_dirs, read_scalars, run_ddp_fit, write_corpus

from gengs_lightning.cli import main

QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def checkpointing_config(tmp_path: Path, base: str, every_n_train_steps: int, **changes) -> Path:
    """``base`` logging every step and checkpointing at every epoch end and every ``every_n_train_steps`` steps.

    ``changes`` are ``section.key=value`` overrides of the YAML (dots in the key name nesting).
    """
    config = yaml.safe_load((CONFIGS / base).read_text())
    config["trainer"]["log_every_n_steps"] = 1
    folder = tmp_path / "checkpoints"
    config["trainer"]["callbacks"] = [
        {
            "class_path": "pytorch_lightning.callbacks.ModelCheckpoint",
            "init_args": {"dirpath": str(folder / "epochs"), "save_top_k": -1},
        },
        {
            "class_path": "pytorch_lightning.callbacks.ModelCheckpoint",
            "init_args": {
                "dirpath": str(folder / "steps"),
                "every_n_train_steps": every_n_train_steps,
                "save_top_k": -1,
            },
        },
    ]
    for dotted, value in changes.items():
        *parents, key = dotted.split("__")
        node = config
        for parent in parents:
            node = node[parent]
        node[key] = value
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def saved_checkpoints(tmp_path: Path) -> Path:
    """A copy of the checkpoints written so far (resumed runs write into the same folders)."""
    return Path(shutil.copytree(tmp_path / "checkpoints", tmp_path / "saved"))


def checkpoint(saved: Path, kind: str, step: int) -> Path:
    (path,) = (saved / kind).glob(f"*step={step}.ckpt")
    return path


def logged(save_dir: Path) -> dict[str, dict[int, float]]:
    (log_dir,) = event_dirs(save_dir)
    return {tag: dict(values) for tag, values in read_scalars(log_dir).items()}


def assert_continues(uninterrupted: dict, resumed: dict, start: int, tags=("train/loss", "train/tau")) -> None:
    """Every tag the resumed run logs equals the uninterrupted run's at every step from ``start`` on."""
    for tag in tags:
        expected = {step: value for step, value in uninterrupted[tag].items() if step >= start}
        got = resumed[tag]
        assert sorted(got) == sorted(expected), tag
        differences = {step: abs(got[step] - expected[step]) for step in expected}
        assert max(differences.values()) == 0.0, (tag, {s: d for s, d in differences.items() if d})
    assert len(set(resumed["train/loss"].values())) > 1  # the loss moves, so the comparison is not vacuous


def fit(config: Path, save_dir: Path, *extra: str) -> None:
    main(["fit", "--config", str(config), f"--trainer.logger.init_args.save_dir={save_dir}", *QUIET, *extra])


def check_resumes(run, config: Path, root: Path, flags: list[str], resumes, tags=("train/loss", "train/tau")) -> None:
    """Run ``config`` uninterrupted, then resumed from each ``(kind, step)`` checkpoint; the logs must agree.

    ``run(config, save_dir, *flags)`` trains (in process or under DDP); ``kind`` is ``epochs`` or ``steps``.
    """
    run(config, root / "full", *flags)
    uninterrupted = logged(root / "full")
    saved = saved_checkpoints(root)
    for kind, step in resumes:
        save_dir = root / f"resumed_{kind}_{step}"
        run(config, save_dir, *flags, f"--ckpt_path={checkpoint(saved, kind, step)}")
        assert_continues(uninterrupted, logged(save_dir), step, tags)


@pytest.mark.parametrize(
    ("changes", "resumes"),
    [
        # checkpoints at the end of every epoch (40 steps; written in on_train_epoch_end) and every 30 steps
        ({}, [("epochs", 40), ("steps", 30), ("steps", 60)]),
        # validation every 20 steps: checkpoints after it (mid-epoch at 20, 60) and just before it (at 60)
        ({"trainer__val_check_interval": 20}, [("epochs", 20), ("epochs", 40), ("steps", 60)]),
    ],
    ids=["validating_every_epoch", "validating_every_20_steps"],
)
def test_toy_run_resumed_at_a_checkpoint_logs_the_same_loss(changes, resumes, tmp_path):
    """Resumed at an epoch end, mid-epoch, and before or after a validation: the same noise, step for step."""
    config = checkpointing_config(
        tmp_path,
        "toy/poisson.yaml",
        every_n_train_steps=30,
        data__init_args__steps_per_epoch=40,
        model__init_args__grad_every=25,  # the gradient statistics draw noise too
        model__init_args__grad_draws=4,
        temperature={"kind": "exponential", "tau_min": 0.05, "rate": 0.03},
        **changes,
    )
    check_resumes(fit, config, tmp_path, ["--trainer.max_steps=100"], resumes)


def test_vae_on_digits_resumed_at_a_checkpoint_sees_the_same_batches(tmp_path):
    """Shuffled batches, dynamic binarisation and the gradient monitor's draws all continue (6 batches an epoch)."""
    config = checkpointing_config(
        tmp_path, "vae/digits_poisson2.yaml", every_n_train_steps=4, data__init_args__batch_size=200
    )
    monitor = ["--trainer.callbacks+=gengs_lightning.callbacks.GradientMonitor", "--trainer.callbacks.every_n_steps=5"]
    flags = ["--trainer.max_steps=16", "--test_after_fit=false", *monitor, "--trainer.callbacks.num_draws=2"]
    check_resumes(fit, config, tmp_path, flags, [("epochs", 6), ("steps", 8)])


@pytest.mark.parametrize(
    ("base", "topics", "tags"),
    [
        ("nvpdef/20news.yaml", "[4]", ("train/loss", "train/kl", "train/tau")),
        ("nvdm/20news.yaml", "4", ("train/loss", "train/kl")),
    ],
    ids=["nvpdef", "nvdm"],
)
def test_topic_model_resumed_at_a_checkpoint_sees_the_same_documents(base, topics, tags, tmp_path):
    """NVPDEF and NVDM on shuffled bags of words (100 training documents, 7 batches an epoch) continue exactly."""
    config = checkpointing_config(tmp_path, base, every_n_train_steps=5)
    corpus = write_corpus(tmp_path / "corpus")
    model = ["--model.init_args.vocab_size=30", f"--model.init_args.topics={topics}", "--model.init_args.hidden=[16]"]
    data = [f"--data.data_dir={corpus}", "--data.init_args.val_size=20", "--data.init_args.batch_size=16"]
    flags = ["--trainer.max_steps=17", "--trainer.log_every_n_steps=1", "--test_after_fit=false", *model, *data]
    check_resumes(fit, config, tmp_path, flags, [("epochs", 7), ("steps", 10)], tags)


def run_ddp(config: Path, save_dir: Path, *extra: str) -> None:
    run_ddp_fit(config, save_dir, *QUIET, *extra, cwd=save_dir.parent)


@pytest.mark.slow
def test_ddp_run_resumed_at_a_checkpoint_logs_the_same_loss(tmp_path):
    """Two CPU ranks (each draws its own noise; both feed the gradient): 20 batches an epoch per rank."""
    config = checkpointing_config(
        tmp_path,
        "toy/poisson.yaml",
        every_n_train_steps=15,
        data__init_args__steps_per_epoch=40,
        model__init_args__grad_every=0,
        temperature={"kind": "exponential", "tau_min": 0.05, "rate": 0.03},
    )
    check_resumes(run_ddp, config, tmp_path, ["--trainer.max_steps=50"], [("epochs", 20), ("steps", 30)])
