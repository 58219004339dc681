"""The VAE through the command line: the digits config end to end, and evaluation under DDP."""

from __future__ import annotations

import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import CONFIGS, cli_env, event_dirs, read_scalars

from gengs_lightning.cli import main

QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def test_digits_config_trains_validates_and_tests_in_one_command(tmp_path):
    cli = main(
        [
            "fit",
            "--config",
            str(CONFIGS / "vae" / "digits_poisson2.yaml"),
            "--trainer.max_epochs=2",
            f"--trainer.logger.init_args.save_dir={tmp_path}",
            *QUIET,
        ]
    )
    logged = read_scalars(event_dirs(tmp_path)[0])
    for tag in (
        "train/loss",
        "train/recon",
        "train/kl",
        "train/tau",
        "train/trunc_n",
        "train/trunc_tail_mass",
        "val/loss",
        "val/recon",
        "val/kl",
        "test/loss",
        "test/nll_iw",
        "train/grad_var",
    ):
        assert tag in logged, tag
    assert cli.trainer.checkpoint_callback.best_model_path  # tested on the best checkpoint


@pytest.mark.parametrize("config", sorted((CONFIGS / "vae").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_vae_config_parses_and_builds(config, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(config), "--print_config"])
    assert exit_info.value.code == 0
    assert "gengs_lightning.models.VAE" in capsys.readouterr().out


def _validate(tmp_path: Path, checkpoint: Path, name: str, *extra: str) -> float:
    env = cli_env()
    command = [
        sys.executable,
        "-m",
        "gengs_lightning",
        "validate",
        "--config",
        str(CONFIGS / "vae" / "digits_poisson2.yaml"),
        "--data=helpers.AlternatingImages",
        f"--ckpt_path={checkpoint}",
        f"--trainer.logger.init_args.save_dir={tmp_path / name}",
        *QUIET,
        *extra,
    ]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    ((_, value),) = read_scalars(event_dirs(tmp_path / name)[0])["val/loss"]
    return value


@pytest.mark.slow
def test_ddp_validation_loss_averages_both_ranks(tmp_path):
    main(
        [
            "fit",
            "--config",
            str(CONFIGS / "vae" / "digits_poisson2.yaml"),
            "--trainer.max_epochs=3",
            "--test_after_fit=false",
            f"--trainer.logger.init_args.save_dir={tmp_path / 'fit'}",
            *QUIET,
        ]
    )
    checkpoint = next((tmp_path / "fit").rglob("last.ckpt"))
    # Single-process reference over all rows, repeated with several seeds to measure the sampling noise.
    single = [_validate(tmp_path, checkpoint, f"single{seed}", f"--seed_everything={seed}") for seed in range(4)]
    zeros = _validate(tmp_path, checkpoint, "zeros", "--data.pattern=zeros")
    ddp = _validate(tmp_path, checkpoint, "ddp", "--config", str(CONFIGS / "trainer" / "ddp_cpu.yaml"))
    mean, spread = statistics.mean(single), statistics.stdev(single)
    assert abs(zeros - mean) > 8 * spread  # one rank's rows alone: twice as far as the acceptance band below
    assert abs(ddp - mean) < 4 * spread * (1 + 1 / len(single)) ** 0.5
