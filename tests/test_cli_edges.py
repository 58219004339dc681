"""The command line at the edges: one-outcome windows, untruncated rates that overflow, training that goes nowhere."""

from __future__ import annotations

import pytest

from gengs_lightning.cli import main


@pytest.mark.parametrize(
    ("estimator", "flag"),
    [
        ("GenGSExplicit", "--model.estimator.init_args.window=1"),
        ("GenGSImplicit", "--model.estimator.init_args.window=[4, 4]"),
        ("GumbelSoftmax", "--model.estimator.init_args.window=1"),
        ("REBAR", "--model.estimator.init_args.window=1"),
        ("Reinforce", "--model.estimator.init_args.truncation=1"),
    ],
)
def test_a_window_of_one_outcome_fails_before_training(estimator, flag, toy_args, tmp_path, capsys):
    args = toy_args("poisson", f"--model.estimator=gengs_lightning.estimators.{estimator}", flag)
    with pytest.raises((SystemExit, ValueError)) as error:
        main(["fit", *args, "--trainer.max_steps=2"])
    text = capsys.readouterr().err if error.type is SystemExit else str(error.value)
    name = flag.split(".")[-1].split("=")[0]
    assert f"{name} must hold at least 2 outcomes: a truncation level n >= 2 or a pair [a, b] with a < b" in text
    assert not (tmp_path / "logs").exists()  # nothing was trained or logged
