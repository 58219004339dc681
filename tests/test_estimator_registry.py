"""An estimator defined here and registered at run time reaches the CLI, the contract tests and the comparison.

Nothing else is edited for it: the class below, one ``register`` call, and the lists read the registry.
"""

from __future__ import annotations

import math
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
from estimators.estimator_testing import FAMILIES, registry_examples
from estimators.test_estimator_contract import (
    check_eval_contract,
    check_output_contract,
    check_unbiased,
    check_without_kl,
)
from helpers import CONFIGS, REPO, cli_env, event_dirs, read_scalars
from torch import Tensor

from gengs_lightning.distributions import Prior
from gengs_lightning.estimators import EstimatorOutput, Objective, WindowedEstimator
from gengs_lightning.estimators.registry import register, registered, unregister


class TableReinforce(WindowedEstimator):
    """REINFORCE on the window's table (no baseline): ``f(z) grad log q(z)`` at exact draws ``z``, plus the KL."""

    unbiased = True

    def forward(self, params: Tensor, objective: Objective, prior: Prior, kl: bool = True) -> EstimatorOutput:
        posterior, prior_table = self.tables(params, prior)
        kl_term = self.kl_term(posterior, prior_table, kl, params)
        out = self.exact_output(posterior, objective, kl_term, self.truncation_stats(posterior, prior_table, prior))
        if self.training:
            score = (out.objective.detach() * posterior.log_prob(out.sample).sum(-1)).mean()
            out.surrogate = out.surrogate + (score - score.detach())
        return out


@pytest.fixture
def toy():
    """``TableReinforce`` registered for the test, and removed again after it."""
    register(TableReinforce)
    yield TableReinforce
    unregister(TableReinforce)


def test_it_is_registered_and_only_while_the_test_runs(toy):
    assert toy in registered()
    unregister(toy)
    assert toy not in registered()
    register(toy)


def test_the_contract_tests_list_it_on_every_family_and_it_passes_them(toy):
    examples = [example for example in registry_examples() if example.cls is toy]
    assert sorted(example.family for example in examples) == sorted(FAMILIES)
    for example in examples:
        check_output_contract(example, num_samples=3)
        check_eval_contract(example)
        check_without_kl(example)
        if example.family in ("poisson", "categorical"):
            check_unbiased(example)


def test_the_comparison_lists_it(toy):
    script = runpy.run_path(str(REPO / "scripts" / "compare_estimators.py"))
    study = script["with_registered_estimators"](script["Study"].load(script["STUDY"]))
    (setting,) = [s for s in study.axes["estimator"] if s.name == "TableReinforce"]
    assert setting.flags[script["ESTIMATOR_FLAG"]].endswith(".TableReinforce")


def test_the_cli_trains_it_by_class_path(tmp_path):
    """``python -m gengs_lightning fit`` with ``--model.estimator <this module>.TableReinforce``."""
    command = [sys.executable, "-m", "gengs_lightning", "fit", "--config", str(CONFIGS / "toy" / "poisson.yaml")]
    command += [
        f"--model.estimator={Path(__file__).stem}.TableReinforce",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
        "--trainer.max_steps=3",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--trainer.log_every_n_steps=1",
    ]
    done = subprocess.run(command, cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (log_dir,) = event_dirs(tmp_path)
    losses = [value for _, value in read_scalars(log_dir)["train/loss"]]
    assert len(losses) == 3 and all(map(math.isfinite, losses))
