"""The command line at the edges: one-outcome windows, untruncated rates that overflow, training that goes nowhere."""

from __future__ import annotations

import warnings

import pytest
from helpers import event_dirs, read_scalars

from gengs_lightning.cli import main
from gengs_lightning.estimators import ParameterRangeError


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


@pytest.mark.parametrize(
    ("estimator", "flag", "step", "shown"),
    [
        # a huge raw output from the start: torch's sampler used to give draws of -9.2e18 and a support error
        ("Reinforce", "--model.init_args.init={rate: 1e30}", 0, "the encoder output 1e+30 at [0, 0] gives rate=1e+30"),
        # MuProp's analytic control variate makes the first gradient negative (rate 5 < targets ~ 20), so Adam's
        # first step of 1e25 sends the rate to 1e25
        ("MuProp", "--model.optimizer.init_args.lr=1e25", 1, "the encoder output 1e+25 at [0, 0] gives rate=1e+25"),
    ],
)
def test_an_untruncated_rate_beyond_the_sampler_names_the_step(estimator, flag, step, shown, toy_args):
    args = toy_args("poisson", f"--model.estimator=gengs_lightning.estimators.{estimator}", flag)
    with pytest.raises(ParameterRangeError) as error:
        main(["fit", *args, "--trainer.max_steps=5"])
    message = str(error.value)
    assert message.startswith(f"At global step {step}, epoch 0: {estimator} samples the untruncated poisson family")
    assert shown in message and "truncation" in message


def edge_warnings(caught) -> list[str]:
    return [str(w.message) for w in caught if "edge of its truncation window" in str(w.message)]


def test_a_posterior_pinned_at_the_window_edge_warns_once_with_the_step(toy_args, tmp_path):
    """An absurd learning rate sends the rate to ~1e6 in one step; the window [0, 59] then holds it on its edge."""
    args = toy_args("poisson", "--model.optimizer.init_args.lr=1e6", "--model.init_args.grad_every=0")
    with pytest.warns(UserWarning) as caught:
        cli = main(["fit", *args, "--trainer.max_steps=30"])
    assert cli.trainer.global_step == 30  # a warning, not an error: the run goes on
    (message,) = edge_warnings(caught)
    assert message.startswith(
        "At global step 1, epoch 0, batch 1: the posterior puts 1 of its mass (trunc_edge_mass, batch mean"
    )
    assert "window [0, 59]" in message and "widen the window" in message and "GenGSNonparametric" in message
    (log_dir,) = event_dirs(tmp_path / "logs")
    assert [value for _, value in read_scalars(log_dir)["train/trunc_edge_mass"]][-1] > 0.99


def test_a_normal_toy_run_does_not_warn_about_the_window_edge(toy_args, tmp_path):
    args = toy_args("poisson", "--model.init_args.grad_every=0")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        main(["fit", *args, "--trainer.max_steps=100"])
    assert edge_warnings(caught) == []
    (log_dir,) = event_dirs(tmp_path / "logs")
    assert max(value for _, value in read_scalars(log_dir)["train/trunc_edge_mass"]) < 1e-6
