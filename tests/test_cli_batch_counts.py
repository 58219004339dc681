"""``--trainer.limit_val_batches 1`` is one batch and ``1.0`` every batch, as Lightning documents."""

from __future__ import annotations

import pytest
from helpers import CONFIGS

from gengs_lightning.cli import main
from gengs_lightning.cli_batch_counts import BATCH_COUNT_FLAGS

DIGITS = ["--config", str(CONFIGS / "vae" / "digits_poisson2.yaml")]


@pytest.mark.parametrize("flag", BATCH_COUNT_FLAGS)
@pytest.mark.parametrize(("written", "parsed"), [("1", 1), ("1.0", 1.0), ("3", 3), ("0.25", 0.25)])
def test_a_whole_number_on_the_command_line_stays_an_int(flag, written, parsed, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = main([*DIGITS, f"--trainer.{flag}={written}"], run=False)
    value = cli.config.trainer[flag]
    assert value == parsed and type(value) is type(parsed)


def test_a_whole_number_in_yaml_stays_an_int(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "limits.yaml").write_text("trainer:\n  limit_val_batches: 1\n  limit_test_batches: 1.0\n")
    cli = main([*DIGITS, "--config", "limits.yaml"], run=False)
    assert type(cli.config.trainer.limit_val_batches) is int
    assert type(cli.config.trainer.limit_test_batches) is float


def test_limit_val_batches_1_validates_on_one_batch_and_1_0_on_all(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    budget = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=1", "--trainer.enable_progress_bar=false"]
    budget += ["--test_after_fit=false", "--data.init_args.eval_batch_size=100"]
    one = main(["fit", *DIGITS, *budget, "--trainer.limit_val_batches=1"]).trainer
    every = main(["fit", *DIGITS, *budget, "--trainer.limit_val_batches=1.0"]).trainer
    assert one.num_val_batches == [1]
    assert every.num_val_batches == [3]  # the digits' 297 validation images in batches of 100
