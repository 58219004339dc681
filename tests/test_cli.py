"""The command line as a user runs it: fit/validate/test/predict, logs, checkpoints, DDP, bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from helpers import CONFIGS, event_dirs, read_scalars, run_ddp_fit
from pytorch_lightning.callbacks import ProgressBar

from gengs_lightning.cli import main
from gengs_lightning.estimators import GenGSExplicit, GenGSImplicit
from gengs_lightning.models import ToyTask

TOY_SCALARS = ("train/loss", "train/tau", "train/trunc_n", "train/trunc_tail_mass", "train/grad_var", "train/grad_bias")


def run(args: list[str], subcommand: str = "fit"):
    return main([subcommand, *args])


def test_toy_poisson_learns_and_logs_every_scalar(toy_args, tmp_path):
    cli = run(toy_args("poisson", "--trainer.max_steps=300"))
    (log_dir,) = event_dirs(tmp_path / "logs")
    logged = read_scalars(log_dir)
    for tag in TOY_SCALARS:
        assert logged.get(tag), f"{tag} missing from {sorted(logged)}"
    losses = [v for _, v in logged["train/loss"]]
    # The loss is noisy: compare the first and last fifth of the run (each a mean of 6 logged steps).
    assert sum(losses[-6:]) / 6 < 0.5 * sum(losses[:6]) / 6
    targets = cli.datamodule.targets
    optimum = targets.mean().item() - 0.5  # argmin of rate + mean_i (rate - t_i)^2
    rate = torch.nn.functional.softplus(cli.model.raw).item()
    assert abs(rate - optimum) < abs(5.0 - optimum) / 3  # started at 5, now within a third of the way
    taus = [v for _, v in logged["train/tau"]]
    assert taus[0] > taus[-1] >= 0.1 - 1e-6  # exponential annealing down to tau_min
    assert {v for _, v in logged["train/trunc_n"]} == {60.0}


@pytest.mark.parametrize("family", ["binomial", "negative_binomial", "multinomial"])
def test_every_toy_config_trains(family, toy_args, tmp_path):
    run(toy_args(family, "--trainer.max_steps=60"))
    (log_dir,) = event_dirs(tmp_path / "logs")
    logged = read_scalars(log_dir)
    assert all(torch.isfinite(torch.tensor(v)) for _, v in logged["train/loss"])
    exact = [v for _, v in logged["train/exact_loss"]]
    assert exact[-1] < exact[0]


def test_swap_estimator_from_the_command_line(toy_args):
    cli = run(
        toy_args("poisson", "--trainer.max_steps=5", "--model.estimator=gengs_lightning.estimators.GenGSImplicit")
    )
    assert isinstance(cli.model.estimator, GenGSImplicit)
    assert cli.model.raw.shape == (60,)  # implicit inference learns the 60 window logits


def test_print_config_shows_the_full_config(toy_args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run(toy_args("poisson", "--print_config"))
    assert exit_info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["init_args"]["estimator"]["class_path"] == "gengs_lightning.estimators.GenGSExplicit"
    assert printed["seed_everything"] == 0
    assert printed["temperature"]["kind"] == "exponential"


def test_rerun_into_the_same_directory_and_reload_checkpoint(toy_args, tmp_path):
    args = toy_args("poisson", "--trainer.max_steps=10")
    run(args)
    cli = run(args)  # the same save_dir again: a new version, config.yaml overwritten without error
    versions = sorted(p.name for p in (tmp_path / "logs" / "toy_poisson").iterdir())
    assert versions == ["version_0", "version_1"]
    (checkpoint,) = (tmp_path / "logs" / "toy_poisson" / "version_1" / "checkpoints").glob("*.ckpt")
    reloaded = ToyTask.load_from_checkpoint(checkpoint)
    assert isinstance(reloaded.estimator, GenGSExplicit)
    assert reloaded.estimator.window == cli.model.estimator.window
    assert torch.equal(reloaded.raw, cli.model.raw.detach().cpu())
    assert reloaded.estimator.tau.item() == pytest.approx(cli.model.estimator.tau.item())


@pytest.mark.parametrize("subcommand", ["validate", "test", "predict"])
def test_other_subcommands_run_from_a_checkpoint(subcommand, toy_args, tmp_path):
    run(toy_args("poisson", "--trainer.max_steps=10"))
    (checkpoint,) = (tmp_path / "logs").rglob("*.ckpt")
    cli = run([*toy_args("poisson"), f"--ckpt_path={checkpoint}"], subcommand)
    assert cli.trainer.state.finished


def _resume_config(tmp_path: Path, name: str) -> Path:
    """A toy config whose temperature changes every step and that checkpoints every 20 steps."""
    config = yaml.safe_load((CONFIGS / "toy" / "poisson.yaml").read_text())
    config["trainer"]["log_every_n_steps"] = 1
    config["trainer"]["callbacks"] = [
        {
            "class_path": "pytorch_lightning.callbacks.ModelCheckpoint",
            "init_args": {"dirpath": str(tmp_path / name), "every_n_train_steps": 20, "save_top_k": -1},
        }
    ]
    config["temperature"] = {"kind": "exponential", "tau_min": 0.05, "rate": 0.03}
    config["model"]["init_args"]["grad_every"] = 0
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_resumed_run_continues_the_temperature_schedule_exactly(tmp_path):
    quiet = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
    full = _resume_config(tmp_path, "full")
    main(
        [
            "fit",
            "--config",
            str(full),
            f"--trainer.logger.init_args.save_dir={tmp_path / 'a'}",
            "--trainer.max_steps=40",
            *quiet,
        ]
    )
    partial = _resume_config(tmp_path, "partial")
    main(
        [
            "fit",
            "--config",
            str(partial),
            f"--trainer.logger.init_args.save_dir={tmp_path / 'b'}",
            "--trainer.max_steps=20",
            *quiet,
        ]
    )
    checkpoint = next((tmp_path / "partial").glob("*step=20.ckpt"))
    main(
        [
            "fit",
            "--config",
            str(partial),
            f"--trainer.logger.init_args.save_dir={tmp_path / 'c'}",
            "--trainer.max_steps=40",
            f"--ckpt_path={checkpoint}",
            *quiet,
        ]
    )
    (uninterrupted,) = event_dirs(tmp_path / "a")
    (resumed,) = event_dirs(tmp_path / "c")
    expected = dict(read_scalars(uninterrupted)["train/tau"])
    got = dict(read_scalars(resumed)["train/tau"])
    assert sorted(got) == [step for step in sorted(expected) if step >= 20]
    for step, value in got.items():
        assert value == pytest.approx(expected[step], rel=1e-6), step
    assert len(set(got.values())) == len(got)  # the schedule moved at every step, so the check is not vacuous


def failure_text(args: list[str], capsys) -> str:
    """Run the CLI expecting a failure before training; return what the user is shown."""
    with pytest.raises((SystemExit, ValueError)) as error:
        run(args)
    if error.type is SystemExit:
        assert error.value.code != 0
        return capsys.readouterr().err
    return str(error.value)


@pytest.mark.parametrize(
    ("family", "flag", "message"),
    [
        ("poisson", "--model.init_args.target.family=poison", "unknown family 'poison'; accepted: binomial"),
        ("poisson", "--model.init_args.estimator.init_args.tau=0", "tau must be a finite number > 0, got 0.0"),
        ("poisson", "--model.init_args.estimator.init_args.tau=-2", "tau must be a finite number > 0, got -2.0"),
        (
            "poisson",
            "--model.init_args.estimator.init_args.num_samples=0",
            "num_samples must be an integer >= 1, got 0",
        ),
        (
            "poisson",
            "--model.init_args.estimator.init_args.window=0",
            "window must hold at least 2 outcomes: a truncation level n >= 2 or a pair [a, b] with a < b",
        ),
        ("poisson", "--model.init_args.estimator.init_args.window=[5, 3]", "window must hold at least 2 outcomes"),
        ("poisson", "--model.init_args.target.params={rate: -1}", "GreaterThan(lower_bound=0.0)"),
        ("poisson", "--model.init_args.target.params={rte: 2}", "has no parameter(s) ['rte']; accepted: ['rate']"),
        (
            "binomial",
            "--model.init_args.target.params={total_count: 20, probs: 1.5}",
            "Interval(lower_bound=0.0, upper_bound=1.0)",
        ),
        ("binomial", "--model.init_args.estimator.init_args.window=[0, 25]", "exceeds the binomial support [0, 20]"),
        ("poisson", "--model.estimator=gengs_lightning.estimators.GenGSNope", "has no attribute 'GenGSNope'"),
        (
            "poisson",
            "--temperature.kind=sine",
            "Expected a typing.Literal['constant', 'exponential', 'linear', 'cosine']",
        ),
        ("poisson", "--temperature.tau_min=0", "tau_min (the final temperature) must be a finite number > 0, got 0.0"),
        ("poisson", "--temperature.interval=0", "interval must be an integer >= 1, got 0"),
        ("poisson", "--progress_bar_refresh_rate=-2", "-2 does not conform to restriction v>=0"),
    ],
)
def test_bad_input_fails_before_training(family, flag, message, toy_args, tmp_path, capsys):
    text = failure_text(toy_args(family, flag, "--trainer.max_steps=2"), capsys)
    assert message in text
    assert not (tmp_path / "logs").exists()  # nothing was trained or logged


def test_a_valid_swap_passes_the_same_harness(toy_args):
    """Control for the bad-input cases: swapping to another estimator through the same flags trains."""
    cli = run(
        toy_args("poisson", "--model.estimator=gengs_lightning.estimators.GenGSNonparametric", "--trainer.max_steps=2")
    )
    assert cli.trainer.global_step == 2


def _progress_bars(cli) -> list[tuple[str, int]]:
    return [(type(c).__name__, c.refresh_rate) for c in cli.trainer.callbacks if isinstance(c, ProgressBar)]


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ([], [("TQDMProgressBar", 10)]),
        (["--progress_bar_refresh_rate=1"], [("TQDMProgressBar", 1)]),
        (["--progress_bar_refresh_rate=0"], [("TQDMProgressBar", 0)]),
        (["--trainer.enable_progress_bar=false", "--progress_bar_refresh_rate=3"], []),
        (
            ["--trainer.callbacks+=pytorch_lightning.callbacks.TQDMProgressBar", "--trainer.callbacks.refresh_rate=3"],
            [("TQDMProgressBar", 3)],
        ),
    ],
)
def test_progress_bar_refresh_rate(flags, expected, tmp_path):
    """One bar, refreshed every 10 steps by default; the flag, a disabled bar or a listed bar win."""
    args = ["--config", str(CONFIGS / "toy" / "poisson.yaml"), f"--trainer.logger.init_args.save_dir={tmp_path}"]
    cli = run([*args, "--trainer.max_steps=2", "--trainer.enable_model_summary=false", *flags])
    assert _progress_bars(cli) == expected
    assert cli.trainer.global_step == 2


def test_ddp_on_two_cpu_processes_logs_once(tmp_path):
    result = run_ddp_fit(
        CONFIGS / "toy" / "poisson.yaml",
        tmp_path / "logs",
        "--trainer.max_steps=20",
        "--trainer.log_every_n_steps=5",
        "--trainer.enable_progress_bar=false",
        "--model.init_args.grad_every=10",
        "--data.init_args.steps_per_epoch=40",
        "--trainer.callbacks+=helpers.RecordNoise",
        cwd=tmp_path,
    )
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in result.stderr + result.stdout
    (log_dir,) = event_dirs(tmp_path / "logs")  # one run directory: only rank zero writes
    assert len(list(log_dir.glob("events.out.tfevents.*"))) == 1
    logged = read_scalars(log_dir)
    assert [step for step, _ in logged["train/loss"]] == [4, 9, 14, 19]  # each step logged once
    assert [step for step, _ in logged["train/grad_var"]] == [0, 10]
    noise = [(tmp_path / f"noise_rank{rank}.txt").read_text() for rank in (0, 1)]
    assert noise[0] != noise[1]  # each rank draws its own Gumbel noise
