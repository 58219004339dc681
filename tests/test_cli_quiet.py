"""What every run shows and leaves behind: no advertising or foreign deprecations, no stray config.yaml."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest
import torch
from helpers import CONFIGS, REPO

from gengs_lightning.cli import main
from gengs_lightning.models import ToyTask


def test_a_fit_without_a_logger_is_quiet_and_leaves_nothing_in_the_working_directory(tmp_path):
    command = [sys.executable, "-m", "gengs_lightning", "fit", "--config", str(CONFIGS / "toy" / "poisson.yaml")]
    command += ["--trainer.logger=false", "--trainer.enable_checkpointing=false", "--trainer.max_steps=2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Tip:" not in result.stderr and "litlogger" not in result.stderr and "litmodels" not in result.stderr
    assert "LeafSpec" not in result.stderr
    assert list(tmp_path.iterdir()) == []  # Lightning saved config.yaml into the working directory


def test_a_run_with_a_logger_still_saves_its_config(toy_args, tmp_path):
    main(["fit", *toy_args("poisson", "--trainer.max_steps=1")])
    assert (tmp_path / "logs" / "toy_poisson" / "version_0" / "config.yaml").is_file()


def test_without_a_logger_the_config_goes_into_an_explicit_default_root_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "root"
    args = ["--config", str(CONFIGS / "toy" / "poisson.yaml"), "--trainer.logger=false", "--trainer.max_steps=1"]
    main(["fit", *args, "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={root}"])
    assert (root / "config.yaml").is_file()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["root"]


def test_reloading_a_cli_checkpoint_gives_no_advice_to_ignore_the_estimator_or_prior(toy_args, tmp_path):
    main(["fit", *toy_args("poisson", "--trainer.max_steps=2")])
    (checkpoint,) = tmp_path.rglob("*.ckpt")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = ToyTask.load_from_checkpoint(checkpoint, weights_only=True)
    assert [str(w.message) for w in caught if "nn.Module" in str(w.message)] == []
    assert type(model.estimator).__name__ == "GenGSExplicit"


def test_help_names_the_program_as_it_is_run(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.startswith("usage: python -m gengs_lightning ")


def test_every_checkpoint_the_cli_loads_is_loaded_with_weights_only(toy_args, tmp_path, monkeypatch):
    loads = []
    load = torch.load

    def recording_load(*args, **kwargs):
        loads.append(kwargs.get("weights_only"))
        return load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", recording_load)
    main(["fit", *toy_args("poisson", "--trainer.max_steps=2", "--test_after_fit=true")])
    (checkpoint,) = tmp_path.rglob("*.ckpt")
    main(["test", *toy_args("poisson", f"--ckpt_path={checkpoint}")])
    assert len(loads) >= 3  # the test after fit; the test's hyperparameters, then its weights
    assert set(loads) == {True}
