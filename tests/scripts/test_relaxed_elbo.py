"""scripts/relaxed_elbo.py: exact and relaxed test negative ELBO of a checkpoint written by the CLI."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import CONFIGS, REPO

from gengs_lightning.cli import main

SCRIPT = REPO / "scripts" / "relaxed_elbo.py"
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
ROW = re.compile(r"^test negative ELBO, (exact|relaxed)[^:]*:\s+([\d.]+) \+- ([\d.]+)$", re.M)


def _train_digits(tmp_path: Path, *extra: str) -> Path:
    """A digits VAE trained for one epoch through the CLI; its last checkpoint."""
    config = str(CONFIGS / "vae" / "digits_poisson2.yaml")
    args = ["fit", "--config", config, "--trainer.max_epochs=1", f"--trainer.logger.init_args.save_dir={tmp_path}"]
    main([*args, "--test_after_fit=false", *QUIET, *extra])
    return next(tmp_path.rglob("last.ckpt"))


def _rows(checkpoint: Path, *extra: str) -> dict[str, tuple[float, float]]:
    command = [sys.executable, str(SCRIPT), str(checkpoint), *extra]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return {kind: (float(mean), float(stderr)) for kind, mean, stderr in ROW.findall(output)}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return _train_digits(tmp_path_factory.mktemp("digits"))


def test_relaxed_latents_at_a_vanishing_temperature_give_the_exact_value(checkpoint):
    """As tau -> 0 the relaxed sample is the Gumbel-max draw, so both rows estimate the same mean."""
    rows = _rows(checkpoint, "--tau=1e-4")
    (exact, exact_se), (relaxed, relaxed_se) = rows["exact"], rows["relaxed"]
    assert math.isfinite(exact) and exact > 0
    assert abs(exact - relaxed) < 4 * math.hypot(exact_se, relaxed_se)


def test_relaxed_latents_at_a_high_temperature_differ(checkpoint):
    """Control for the test above: at tau = 100 the decoder sees the window's average, not a count."""
    rows = _rows(checkpoint, "--tau=100")
    (exact, exact_se), (relaxed, relaxed_se) = rows["exact"], rows["relaxed"]
    assert abs(exact - relaxed) > 4 * math.hypot(exact_se, relaxed_se)


def test_refuses_a_checkpoint_of_another_estimator(tmp_path):
    checkpoint = _train_digits(tmp_path, "--model.estimator=gengs_lightning.estimators.Reinforce")
    result = subprocess.run([sys.executable, str(SCRIPT), str(checkpoint)], capture_output=True, text=True)
    assert result.returncode == 2
    assert "the checkpoint's estimator is Reinforce; this compares GenGS estimators" in result.stderr
