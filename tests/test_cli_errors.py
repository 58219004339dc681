"""A bad value on the command line: one or two lines of stderr with the flag, its value and what is accepted."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from helpers import CONFIGS, REPO

GENGS = "gengs_lightning.estimators."


def fit(tmp_path, *flags: str) -> subprocess.CompletedProcess:
    """``python -m gengs_lightning fit`` of the toy Poisson config with ``flags``, as a user runs it."""
    command = [sys.executable, "-m", "gengs_lightning", "fit", "--config", str(CONFIGS / "toy" / "poisson.yaml")]
    command += [f"--trainer.logger.init_args.save_dir={tmp_path / 'logs'}", "--trainer.max_steps=2", *flags]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    ("flags", "shown"),
    [
        (
            ["--model.estimator.init_args.tau", "0"],
            "--model.estimator.tau 0.0: temperature tau must be a finite number > 0, got 0.0",
        ),
        (
            ["--model.target.init_args.family", "poison"],
            "--model.target.family poison: unknown family 'poison'; accepted: binomial, categorical, geometric",
        ),
        (
            ["--model.estimator.init_args.window", "0"],
            "--model.estimator.window 0: window must hold at least 2 outcomes",
        ),
        (
            [f"--model.estimator={GENGS}GenGSNonparametric", "--model.estimator.eps", "1.5"],
            "--model.estimator.eps 1.5: eps (the tail mass left outside the window) must be a number in (0, 1), got 1.5",
        ),
        (
            ["--model.target.params", "{rate: -1}"],
            "--model.target.params {rate: -1.0}: invalid poisson prior {'rate': -1.0}: Expected parameter rate",
        ),
        (
            ["--model.target.params.rate", ".inf"],
            "--model.target.params {rate: .inf}: invalid poisson prior {'rate': inf}: rate must be finite",
        ),
        (
            ["--model.init", "{rate: .inf}"],
            "--model.init {rate: .inf}: invalid poisson prior {'rate': inf}: rate must be finite",
        ),
        (
            ["--temperature.tau_min", "0"],
            "--temperature.tau_min 0.0: tau_min (the final temperature) must be a finite number > 0, got 0.0",
        ),
        # values jsonargparse itself refuses: its message without the sixty lines of usage
        (["--temperature.kind", "sine"], "--temperature.kind: Expected a typing.Literal['constant', 'exponential'"),
        ([f"--model.estimator={GENGS}GenGSNope"], "has no attribute 'GenGSNope'"),
    ],
)
def test_a_bad_value_is_reported_in_at_most_three_lines_naming_the_flag(flags, shown, tmp_path):
    result = fit(tmp_path, *flags)
    assert result.returncode == 2, result.stderr[-3000:]
    assert len(result.stderr.splitlines()) <= 3, result.stderr
    assert "python -m gengs_lightning fit: error: " in result.stderr
    assert shown in result.stderr
    assert "Traceback" not in result.stderr and "Namespace(" not in result.stderr
    assert not (tmp_path / "logs").exists()  # stopped before training
