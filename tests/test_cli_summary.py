"""The summary table a run prints at its end: the metrics, and what the model found."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
import torch
from helpers import CONFIGS, event_dirs, read_scalars

from gengs_lightning.cli import main
from gengs_lightning.summary import format_summary, print_summary

QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def summary_rows(output: str, title: str) -> dict[str, float]:
    """The ``name  value`` rows printed under ``title``."""
    block = output[output.index(title) + len(title) :].splitlines()[1:]
    rows = {}
    for line in block:
        match = re.fullmatch(r"  (\S.*?)\s{2,}(\S+)", line)
        if match is None:
            break
        rows[match.group(1)] = float(match.group(2))
    return rows


def test_toy_fit_prints_the_learned_rate_its_exact_loss_and_the_optimum(toy_args, capsys):
    cli = main(["fit", *toy_args("poisson", "--trainer.max_steps=30", "--data.init_args.steps_per_epoch=10")])
    rows = summary_rows(capsys.readouterr().out, "Summary of fit (ToyTask):")
    rate = torch.nn.functional.softplus(cli.model.raw).item()
    optimum = cli.datamodule.targets.mean().item() - 0.5
    assert rows["rate"] == pytest.approx(rate, rel=1e-5)
    assert rows["optimum rate"] == pytest.approx(optimum, rel=1e-5)
    assert rows["exact loss"] == pytest.approx(cli.model.exact_loss(cli.datamodule.targets).item(), rel=1e-5)
    assert rows["exact loss at optimum"] < rows["exact loss"]
    assert {"best val/loss", "final val/loss"} <= set(rows)


def test_toy_test_of_a_checkpoint_prints_its_summary(toy_args, tmp_path, capsys):
    main(["fit", *toy_args("poisson", "--trainer.max_steps=10", "--data.init_args.steps_per_epoch=10")])
    checkpoint = next((tmp_path / "logs").rglob("*.ckpt"))
    capsys.readouterr()
    main(["test", *toy_args("poisson"), f"--ckpt_path={checkpoint}"])
    rows = summary_rows(capsys.readouterr().out, "Summary of test (ToyTask):")
    assert {"test/loss", "rate", "optimum rate", "exact loss"} <= set(rows)


def test_vae_fit_prints_its_best_validation_loss(tmp_path, capsys):
    main(
        [
            "fit",
            "--config",
            str(CONFIGS / "vae" / "digits_poisson2.yaml"),
            "--trainer.max_epochs=2",
            "--trainer.limit_train_batches=3",
            "--trainer.limit_val_batches=2",
            "--trainer.limit_test_batches=1",
            "--model.init_args.iw_samples=2",
            f"--trainer.logger.init_args.save_dir={tmp_path}",
            *QUIET,
        ]
    )
    rows = summary_rows(capsys.readouterr().out, "Summary of fit (VAE):")
    scalars = read_scalars(event_dirs(tmp_path)[0])
    assert rows["best val/loss"] == pytest.approx(min(value for _, value in scalars["val/loss"]), rel=1e-5)
    assert rows["test/nll_iw"] == pytest.approx(scalars["test/nll_iw"][-1][1], rel=1e-5)


def test_the_summary_aligns_names_and_shows_six_significant_digits():
    table = format_summary("Summary:", {"rate": 19.4012345, "exact loss at optimum": 35.2275})
    assert table == "Summary:\n  rate                   19.4012\n  exact loss at optimum  35.2275"


def test_the_summary_is_printed_on_rank_zero_only(capsys):
    model = SimpleNamespace(summary=lambda: {"rate": 1.0})
    print_summary(SimpleNamespace(callbacks=[], is_global_zero=False), model, "fit")
    assert capsys.readouterr().out == ""
    print_summary(SimpleNamespace(callbacks=[], is_global_zero=True), model, "fit")
    assert "rate  1" in capsys.readouterr().out
