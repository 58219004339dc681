"""The study runner: grids, skip-if-done, stale and failed runs, dry runs, merging and the report."""

from __future__ import annotations

import json
import math
import re
import shlex
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from helpers import CONFIGS, REPO

from gengs_lightning.estimators.registry import class_path, registered
from gengs_lightning.study import Layout, Study, StudyError, merge, run_study, write_report
from gengs_lightning.study.__main__ import _until
from gengs_lightning.study.__main__ import main as study_main
from gengs_lightning.study.runner import _status, pending, run_state, select, thin


def write_study(path: Path, **changes) -> Path:
    """A toy study: GenGSExplicit and Reinforce on Poisson, two seeds, a few steps."""
    spec = {
        "name": "tiny",
        "title": "Tiny toy study",
        "args": {"--trainer.log_every_n_steps": 2, "--trainer.enable_model_summary": False},
        "budgets": {"smoke": {"--trainer.max_steps": 6}, "longer": {"--trainer.max_steps": 12}},
        "grid": {
            "family": {"poisson": {"--config": str(CONFIGS / "toy" / "poisson.yaml")}},
            "estimator": {
                "GenGSExplicit": {"--model.estimator": "gengs_lightning.estimators.GenGSExplicit"},
                "Reinforce": {"--model.estimator": "gengs_lightning.estimators.Reinforce"},
            },
            "seed": {"flag": "--seed_everything", "values": [0, 1]},
        },
        "report": {
            "rows": "estimator",
            "columns": "family",
            "metric": "train/loss",
            "curve": "train/loss",
            "highlight": ["GenGSExplicit"],
            "paper": {"poisson": {"GenGSExplicit": 36.0}},
        },
    }
    spec.update(changes)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def write_results(study: Study, layout: Layout, loss_of, npmi_of=None, cost_of=None) -> None:
    """Result files for every run of the smoke budget: ``train/loss`` from ``loss_of(run)`` (``None``: diverged)."""
    for run in study.runs("smoke"):
        loss = loss_of(run)
        final = {} if loss is None else {"train/loss": loss}
        if npmi_of is not None:
            final["test/npmi"] = npmi_of(run)
        if cost_of is not None:
            final["train/objective_evals"] = cost_of(run)
        result = {
            "study": study.name,
            "run": run.id,
            "status": "done" if loss is not None else "diverged",
            "args_hash": run.args_hash,
            "final": final,
            "curves": {"train/loss": [[0, 30.0], [5, 30.0 if loss is None else loss]]},
            "wall_time_s": 1.0,
            "machine": {"cpu": "cpu", "threads": 1, "torch": "2", "gpu": None},
        }
        path = layout.result_file(run, "smoke")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result))


def test_grid_expands_in_file_order_with_configs_first_and_later_flags_winning(tmp_path):
    study = Study.load(write_study(tmp_path / "tiny.yaml", args={"--trainer.max_steps": 99, "--x": 1}))
    runs = study.runs("smoke")
    assert [r.id for r in runs] == [
        "poisson/GenGSExplicit/seed0",
        "poisson/GenGSExplicit/seed1",
        "poisson/Reinforce/seed0",
        "poisson/Reinforce/seed1",
    ]
    args = runs[1].args
    assert args[:3] == ("fit", "--config", str(CONFIGS / "toy" / "poisson.yaml"))
    assert "--trainer.max_steps=6" in args and "--trainer.max_steps=99" not in args  # the budget wins
    assert "--seed_everything=1" in args and "--x=1" in args
    assert runs[1].file_stem == "poisson__GenGSExplicit__seed1"
    assert len({r.args_hash for r in runs}) == 4
    overridden = study.runs("smoke", {"--x": "2"})
    assert "--x=2" in overridden[0].args and overridden[0].args_hash != runs[0].args_hash
    # the data folder is the machine's, not the run's: it does not change the hash
    moved = study.runs("smoke", {"--data.data_dir": "/elsewhere"})
    assert "--data.data_dir=/elsewhere" in moved[0].args and moved[0].args_hash == runs[0].args_hash


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"grid": {}}, "grid must name at least one axis"),
        ({"grid": {"budget": {"a": {"--x": 1}}}}, "grid axis 'budget' is reserved"),
        ({"budgets": {}}, "budgets must name at least one budget"),
        ({"extra": 1}, "unknown key(s) ['extra']"),
        ({"args": {"--trainer.logger.init_args.save_dir": "x"}}, "set by the study runner"),
        ({"args": {"max_steps": 3}}, "is not a flag"),
        ({"grid": {"seed": {"flag": "--seed_everything", "values": []}}}, "values must be a non-empty list"),
        (
            {"grid": {"estimator": {"GS": {"--model.estimator": "gengs_lightning.estimators.GumbelSoftmx"}}}},
            "grid.estimator.GS: --model.estimator names 'gengs_lightning.estimators.GumbelSoftmx', not a registered "
            "estimator; accepted: ",
        ),
        (
            {"args": {"--model.init_args.estimator": "gengs_lightning.estimators.Reinforse"}},
            "args: --model.init_args.estimator names 'gengs_lightning.estimators.Reinforse'",
        ),
    ],
)
def test_bad_study_files_are_refused_with_the_entry(tmp_path, change, message):
    with pytest.raises(StudyError, match=re.escape(message)):
        Study.load(write_study(tmp_path / "bad.yaml", **change))


def test_estimators_of_other_packages_are_left_to_the_cli_and_the_accepted_list_is_the_registry(tmp_path):
    grid = {"estimator": {"mine": {"--model.estimator": "my_package.MyEstimator"}}}
    assert Study.load(write_study(tmp_path / "own.yaml", grid=grid)).axes["estimator"][0].name == "mine"
    grid = {"estimator": {"typo": {"--model.estimator": "gengs_lightning.estimators.GenGS"}}}
    with pytest.raises(StudyError) as error:
        Study.load(write_study(tmp_path / "typo.yaml", grid=grid))
    accepted = str(error.value).split("accepted: ")[1].split(", ")
    assert accepted == [class_path(cls).removeprefix("gengs_lightning.estimators.") for cls in registered()]
    assert {"GenGSExplicit", "GenGSImplicit", "Reinforce", "VIMCO", "REBAR", "UnOrd"} <= set(accepted)


def test_unknown_budget_names_the_accepted_ones(tmp_path):
    study = Study.load(write_study(tmp_path / "tiny.yaml"))
    with pytest.raises(StudyError, match="no budget 'paper'; accepted: smoke, longer"):
        study.runs("paper")


def test_run_writes_results_skips_done_runs_and_reports(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    study = Study.load(write_study(tmp_path / "tiny.yaml"))
    layout = Layout(tmp_path / "results", tmp_path / "runs")
    written = run_study(study, "smoke", layout, jobs=2, threads=1, only=["poisson/*/seed0"], log=lambda _: None)
    assert sorted(r["run"] for r in written) == ["poisson/GenGSExplicit/seed0", "poisson/Reinforce/seed0"]
    result = json.loads((layout.results / "tiny" / "smoke" / "poisson__GenGSExplicit__seed0.json").read_text())
    assert result["status"] == "done" and result["axes"] == {
        "family": "poisson",
        "estimator": "GenGSExplicit",
        "seed": "seed0",
    }
    assert result["config"]["model"]["init_args"]["estimator"]["class_path"].endswith("GenGSExplicit")
    assert result["config"]["trainer"]["max_steps"] == 6 and result["config"]["seed_everything"] == 0
    assert [step for step, _ in result["curves"]["train/loss"]][-1] == 5  # every logged step up to the last
    assert result["final"]["train/loss"] == result["curves"]["train/loss"][-1][1]
    assert result["machine"]["threads"] == 1 and result["machine"]["torch"]
    assert result["wall_time_s"] > 0 and len(result["config_hash"]) == 16
    assert result["code"] is None or len(result["code"]["commit"]) == 40

    # done runs are skipped; the other seed is still pending
    again = run_study(study, "smoke", layout, only=["poisson/*/seed0"], log=lambda _: None)
    assert again == []
    assert [r.id for r in pending(study.runs("smoke"), "smoke", layout)] == [
        "poisson/GenGSExplicit/seed1",
        "poisson/Reinforce/seed1",
    ]
    # a changed study makes the old result stale: reported, not rerun unless asked
    changed = Study.load(write_study(tmp_path / "tiny.yaml", args={"--trainer.log_every_n_steps": 3}))
    assert run_state(changed.runs("smoke")[0], "smoke", layout) == "stale"
    assert pending(changed.runs("smoke")[:1], "smoke", layout) == []
    assert len(pending(changed.runs("smoke")[:1], "smoke", layout, rerun_stale=True)) == 1

    path = write_report(study, "smoke", layout, tmp_path / "docs")
    text = path.read_text()
    assert path.name == "tiny.md"  # the default budget's report has the study's name
    assert "2 of 4 runs have results (2 done, 0 diverged, 0 failed)" in text
    assert "| estimator | poisson | poisson (paper) |" in text
    genGS = next(line for line in text.splitlines() if line.startswith("| GenGSExplicit |"))
    reinforce = next(line for line in text.splitlines() if line.startswith("| Reinforce |"))
    assert "(n=1)" in genGS and "| 36.0 |" in genGS
    assert ("**" in genGS) != ("**" in reinforce)  # exactly one best value per column
    assert "Better by more than the seed spread" in text
    assert "| poisson/Reinforce/seed1 | missing | | | |" in text
    assert (tmp_path / "docs" / "tiny" / "train_loss.png").stat().st_size > 1000


def test_failed_runs_are_recorded_and_run_again(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    study = Study.load(write_study(tmp_path / "tiny.yaml", args={"--model.init_args.no_such_argument": 1}))
    layout = Layout(tmp_path / "results", tmp_path / "runs")
    (result,) = run_study(study, "smoke", layout, threads=1, only=["poisson/GenGSExplicit/seed0"], log=lambda _: None)
    assert result["status"] == "failed" and "no_such_argument" in result["error"]
    assert [r.id for r in pending(study.runs("smoke"), "smoke", layout)][0] == "poisson/GenGSExplicit/seed0"
    assert (
        study_main(
            [
                "run",
                str(tmp_path / "tiny.yaml"),
                "--budget",
                "smoke",
                "--only",
                "poisson/Reinforce/seed0",
                "--results",
                str(layout.results),
                "--runs",
                str(layout.runs),
                "--threads",
                "1",
            ]
        )
        == 1
    )


def test_status_lines_tell_diverged_from_failed():
    log = "Traceback (most recent call last):\n  ...\nFloatingPointError: loss is nan at global step 7, epoch 0, batch 7\n"
    assert _status(1, log) == ("diverged", "FloatingPointError: loss is nan at global step 7, epoch 0, batch 7")
    assert _status(1, 'error: Parser key "model":\n  bad value\n')[0] == "failed"
    assert _status(0, "anything") == ("done", None)


def test_dry_run_prints_one_runnable_command_per_missing_run(tmp_path, capsys):
    study_file = write_study(tmp_path / "tiny.yaml")
    layout = ["--results", str(tmp_path / "results"), "--runs", str(tmp_path / "runs")]
    assert study_main(["run", str(study_file), "--budget", "smoke", "--dry-run", *layout]) == 0
    commands = capsys.readouterr().out.splitlines()
    assert len(commands) == 4 and all("--only" in c for c in commands)
    # a scheduler runs one of them as it is; the runner then sees that run as done
    subprocess.run(shlex.split(commands[0]) + ["--threads", "1"], check=True, cwd=REPO, capture_output=True)
    assert study_main(["run", str(study_file), "--budget", "smoke", "--dry-run", *layout]) == 0
    assert capsys.readouterr().out.splitlines() == commands[1:]


def test_merge_copies_missing_results_and_reports_conflicts(tmp_path):
    study = Study.load(write_study(tmp_path / "tiny.yaml"))
    ours, theirs = Layout(tmp_path / "ours"), tmp_path / "theirs"
    runs = study.runs("smoke")

    def fake(root: Path, run, status="done", args_hash=None):
        path = root / "tiny" / "smoke" / f"{run.file_stem}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            json.dumps({"study": "tiny", "run": run.id, "status": status, "args_hash": args_hash or run.args_hash})
        )

    fake(ours.results, runs[0])
    fake(ours.results, runs[1], status="failed")
    fake(theirs, runs[0], args_hash="0" * 16)  # same run, other arguments: a conflict, ours kept
    fake(theirs, runs[1])  # replaces our failed run
    fake(theirs, runs[2])  # new
    lines = []
    assert merge([theirs], study, ours, log=lines.append) == 2
    assert any(line.startswith("conflict:") for line in lines)
    assert run_state(runs[0], "smoke", ours) == "done"
    assert run_state(runs[1], "smoke", ours) == "done"
    assert run_state(runs[2], "smoke", ours) == "done"
    assert run_state(runs[3], "smoke", ours) == "missing"


def test_report_marks_diverged_cells_and_tells_the_verdict(tmp_path):
    study = Study.load(write_study(tmp_path / "tiny.yaml"))
    layout = Layout(tmp_path / "results")
    values = {"GenGSExplicit": [10.0, 11.0], "Reinforce": [20.0, None]}  # None: diverged
    write_results(study, layout, lambda run: values[run.axes["estimator"]][int(run.axes["seed"][-1])])
    text = write_report(study, "smoke", layout, tmp_path / "docs").read_text()
    assert "| GenGSExplicit | **10.50 +- 0.71** (n=2) | 36.0 |" in text
    assert "| Reinforce | 20.00 (n=1, 1 diverged) |  |" in text
    assert "Better by more than the seed spread: **yes**" in text


def test_thin_keeps_the_ends_and_at_most_the_limit():
    points = [(i, float(i)) for i in range(1000)]
    kept = thin(points, 50)
    assert len(kept) == 50 and kept[0] == (0, 0.0) and kept[-1] == (999, 999.0)
    assert thin(points[:10], 50) == points[:10]


def test_command_line_errors_are_one_line(tmp_path, capsys):
    assert study_main(["run", str(tmp_path / "nothing.yaml")]) == 2
    assert capsys.readouterr().err.strip() == f"error: no study file {tmp_path / 'nothing.yaml'}"
    assert study_main(["run", str(write_study(tmp_path / "tiny.yaml")), "--budget", "paper"]) == 2
    assert "no budget 'paper'" in capsys.readouterr().err


def test_excluded_combinations_are_not_run_and_show_as_not_applicable(tmp_path):
    study = Study.load(write_study(tmp_path / "tiny.yaml", exclude=[{"estimator": "Reinforce", "seed": "seed1"}]))
    assert [r.id for r in study.runs("smoke")] == [
        "poisson/GenGSExplicit/seed0",
        "poisson/GenGSExplicit/seed1",
        "poisson/Reinforce/seed0",
    ]
    everything = Study.load(write_study(tmp_path / "all.yaml", exclude=[{"estimator": "Reinforce"}]))
    text = write_report(everything, "smoke", Layout(tmp_path / "results"), tmp_path / "docs").read_text()
    assert "| Reinforce | n/a |  |" in text
    with pytest.raises(StudyError, match="exclude names estimator='VIMCO', which is not in the grid"):
        Study.load(write_study(tmp_path / "bad.yaml", exclude=[{"estimator": "VIMCO"}]))


def test_an_exclusion_can_hold_under_one_budget_only(tmp_path):
    study = Study.load(write_study(tmp_path / "tiny.yaml", exclude=[{"estimator": "Reinforce", "budget": "smoke"}]))
    assert [r.id for r in study.runs("smoke")] == ["poisson/GenGSExplicit/seed0", "poisson/GenGSExplicit/seed1"]
    assert [r.id for r in study.runs()] == [r.id for r in study.runs("smoke")]  # smoke is the default budget
    assert len(study.runs("longer")) == 4
    text = write_report(study, "smoke", Layout(tmp_path / "results"), tmp_path / "docs").read_text()
    assert "| Reinforce | n/a |  |" in text
    with pytest.raises(StudyError, match="exclude names budget 'gpu'; accepted: smoke, longer"):
        Study.load(write_study(tmp_path / "bad.yaml", exclude=[{"estimator": "Reinforce", "budget": "gpu"}]))


def test_curve_metrics_need_their_curves_and_unknown_prefixes_are_refused(tmp_path):
    study = Study.load(
        write_study(
            tmp_path / "tiny.yaml",
            report={"rows": "estimator", "metric": "mean:train/grad_var", "also": ["best:train/loss", "test/loss"]},
        )
    )
    assert study.curve_tags == ("train/grad_var", "train/loss")
    result = {"status": "done", "final": {}, "curves": {"train/grad_var": [[0, 1.0], [5, 3.0]]}}
    from gengs_lightning.study.report import metric_value

    assert metric_value(result, "mean:train/grad_var") == 2.0
    assert metric_value(result, "best:train/grad_var") == 1.0
    assert metric_value(result, "log10mean:train/grad_var") == pytest.approx(math.log10(3.0) / 2)
    assert metric_value(result, "log10early:train/grad_var") == 0.0
    with pytest.raises(ValueError, match="the prefix must be one of best, mean, log10mean, log10early"):
        metric_value(result, "last:train/grad_var")


def test_code_version_names_the_commit_of_the_working_directory(monkeypatch):
    from gengs_lightning.study.runner import code_version

    monkeypatch.chdir(REPO)
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    version = code_version()
    assert version["commit"] == head and isinstance(version["dirty"], bool)


def test_a_run_locked_by_a_live_runner_is_skipped_and_a_dead_runners_lock_is_taken_over(tmp_path):
    import os
    import socket

    from gengs_lightning.study.runner import claim

    study = Study.load(write_study(tmp_path / "tiny.yaml"))
    layout = Layout(tmp_path / "results", tmp_path / "runs")
    first, second = study.runs("smoke")[:2]
    assert claim(first, "smoke", layout)  # held by this (live) process
    assert run_state(first, "smoke", layout) == "running"
    assert first not in pending(study.runs("smoke"), "smoke", layout)
    assert not claim(first, "smoke", layout)
    dead = subprocess.Popen(["true"])  # a process that has exited: its pid is free
    dead.wait()
    layout.lock_file(second, "smoke").write_text(f"{socket.gethostname()} {dead.pid}\n")
    assert run_state(second, "smoke", layout) == "missing"
    assert claim(second, "smoke", layout)
    assert layout.lock_file(second, "smoke").read_text().split()[1] == str(os.getpid())


def test_a_report_without_columns_puts_every_metric_in_one_table_and_bolds_by_direction(tmp_path):
    report = {"rows": "estimator", "metric": "train/loss", "also": ["test/npmi"], "higher_is_better": ["test/npmi"]}
    study = Study.load(write_study(tmp_path / "tiny.yaml", report=report))
    layout = Layout(tmp_path / "results")
    values = {"GenGSExplicit": (10.0, -0.2), "Reinforce": (20.0, 0.1)}
    write_results(
        study, layout, lambda run: values[run.axes["estimator"]][0], lambda run: values[run.axes["estimator"]][1]
    )
    text = write_report(study, "smoke", layout, tmp_path / "docs").read_text()
    assert "| estimator | train/loss | test/npmi |" in text
    assert "| GenGSExplicit | **10.00 +- 0.00** (n=2) | -0.20 +- 0.00 (n=2) |" in text
    assert "| Reinforce | 20.00 +- 0.00 (n=2) | **0.10 +- 0.00** (n=2) |" in text


def test_digits_can_be_set_per_metric(tmp_path):
    report = {
        "rows": "estimator",
        "metric": "train/loss",
        "also": ["test/npmi"],
        "digits": {"default": 1, "test/npmi": 3},
    }
    study = Study.load(write_study(tmp_path / "tiny.yaml", report=report))
    layout = Layout(tmp_path / "results")
    write_results(study, layout, lambda run: 10.0, lambda run: -0.1234)
    text = write_report(study, "smoke", layout, tmp_path / "docs").read_text()
    assert "| GenGSExplicit | **10.0 +- 0.0** (n=2) | **-0.123 +- 0.000** (n=2) |" in text


def test_set_overrides_a_flag_and_travels_with_the_dry_run_commands(tmp_path, capsys):
    study_file = write_study(tmp_path / "tiny.yaml")
    layout = ["--results", str(tmp_path / "results"), "--runs", str(tmp_path / "runs")]
    assert study_main(["run", str(study_file), "--dry-run", "--set", "data.data_dir=/data", *layout]) == 0
    commands = capsys.readouterr().out.splitlines()
    assert len(commands) == 4 and all(c.endswith("--set data.data_dir=/data") for c in commands)
    assert study_main(["run", str(study_file), "--dry-run", "--set", "max_steps", *layout]) == 2
    assert "--set takes a CLI flag without its dashes and a value" in capsys.readouterr().err


def test_the_verdict_compares_with_the_named_baselines_only(tmp_path):
    report = {"rows": "estimator", "metric": "train/loss", "highlight": ["GenGSExplicit"], "baselines": ["Reinforce"]}
    study = Study.load(write_study(tmp_path / "tiny.yaml", report=report))
    layout = Layout(tmp_path / "results")
    write_results(study, layout, lambda run: {"GenGSExplicit": 10.0, "Reinforce": 20.0}[run.axes["estimator"]])
    assert "best other: Reinforce 20.00" in write_report(study, "smoke", layout, tmp_path / "docs").read_text()
    one_seed = Study.load(write_study(tmp_path / "one.yaml", report=report, exclude=[{"seed": "seed1"}]))
    text = write_report(one_seed, "smoke", layout, tmp_path / "d1").read_text()
    assert (
        "GenGSExplicit 10.00 (one run); best other: Reinforce 20.00 (one run). Better by more than the seed spread: **n/a (one seed each)**"
        in text
    )
    study = Study.load(write_study(tmp_path / "none.yaml", report={**report, "baselines": ["NoSuchRow"]}))
    assert "not enough finished runs for a verdict" in write_report(study, "smoke", layout, tmp_path / "d2").read_text()


def test_a_run_another_runner_finished_after_this_one_listed_it_is_not_run_again(tmp_path, monkeypatch):
    import gengs_lightning.study.runner as runner

    study = Study.load(write_study(tmp_path / "tiny.yaml"))
    layout = Layout(tmp_path / "results", tmp_path / "runs")
    (first,) = study.runs("smoke")[:1]
    path = layout.result_file(first, "smoke")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"study": "tiny", "run": first.id, "status": "done", "args_hash": first.args_hash}))
    monkeypatch.setattr(runner, "pending", lambda runs, *args, **kwargs: list(runs))  # listed before it finished
    lines = []
    assert run_study(study, "smoke", layout, only=[first.id], log=lines.append) == []
    assert lines[-1] == f"skip {first.id}: another runner has finished it"
    assert not layout.lock_file(first, "smoke").exists()


def test_the_cost_section_names_the_best_row_at_each_cost_and_the_frontier(tmp_path):
    estimators = {
        name: {"--model.estimator": f"gengs_lightning.estimators.{name}"}
        for name in ["GenGSExplicit", "Reinforce", "ReinforceLOO", "VIMCO", "StoRB"]
    }
    grid = {"estimator": estimators, "seed": {"flag": "--seed_everything", "values": [0, 1]}}
    report = {
        "rows": "estimator",
        "metric": "train/loss",
        "cost": "train/objective_evals",
        "highlight": ["GenGSExplicit"],
    }
    study = Study.load(write_study(tmp_path / "tiny.yaml", grid=grid, report=report))
    layout = Layout(tmp_path / "results")
    # cost 1: GenGSExplicit 10 +- ~0.7 beats Reinforce 20; cost 2: ReinforceLOO 9 and VIMCO 9.5 overlap;
    # cost 3: StoRB 12 is beaten by a cheaper row, so it is not on the frontier
    loss = {
        "GenGSExplicit": [10.0, 11.0],
        "Reinforce": [20.0, 21.0],
        "ReinforceLOO": [9.0, 9.6],
        "VIMCO": [9.5, 10.1],
        "StoRB": [12.0, 12.0],
    }
    cost = {"GenGSExplicit": 1, "Reinforce": 1, "ReinforceLOO": 2, "VIMCO": 2, "StoRB": 3}
    write_results(
        study,
        layout,
        lambda run: loss[run.axes["estimator"]][int(run.axes["seed"][-1])],
        cost_of=lambda run: cost[run.axes["estimator"]],
    )
    text = write_report(study, "smoke", layout, tmp_path / "docs").read_text()
    assert "## At equal cost (`train/objective_evals`)\n\n`train/loss`:\n" in text
    assert (
        "- best at each cost: 1: GenGSExplicit 10.50 +- 0.71 (ahead of Reinforce by more than the seed spread: yes); "
        "2: ReinforceLOO 9.30 +- 0.42 (ahead of VIMCO by more than the seed spread: no); 3: StoRB 12.00 +- 0.00."
        in text
    )
    assert "  Frontier (cost, train/loss): GenGSExplicit (1, 10.50), ReinforceLOO (2, 9.30)." in text


def test_only_takes_the_runs_in_the_order_of_its_patterns(tmp_path):
    study = Study.load(write_study(tmp_path / "tiny.yaml"))
    chosen = select(study.runs("smoke"), ["*/seed1", "*/Reinforce/*"])
    assert [run.id for run in chosen] == [
        "poisson/GenGSExplicit/seed1",
        "poisson/Reinforce/seed1",
        "poisson/Reinforce/seed0",  # once only, although both patterns match seed 1 of Reinforce
    ]


def test_until_in_the_past_starts_no_run(tmp_path):
    study = Study.load(write_study(tmp_path / "tiny.yaml"))
    layout, lines = Layout(tmp_path / "results", tmp_path / "runs"), []
    assert run_study(study, "smoke", layout, until=time.time() - 1, log=lines.append) == []
    assert sum(line.startswith("not started ") for line in lines) == 4
    assert not (tmp_path / "results").exists() or not list((tmp_path / "results").rglob("*.json"))


@pytest.mark.parametrize(("value", "seconds"), [("90m", 5400), ("2h", 7200), ("1h30m", 5400), ("0m", 0)])
def test_until_takes_a_duration_from_now(value, seconds):
    assert _until(value) == pytest.approx(time.time() + seconds, abs=5)


def test_until_takes_the_next_occurrence_of_a_clock_time():
    deadline = datetime.fromtimestamp(_until("05:50"))
    assert (deadline.hour, deadline.minute) == (5, 50)
    assert 0 < deadline.timestamp() - time.time() <= 24 * 3600


@pytest.mark.parametrize("value", ["", "25:00", "5pm", "2d", "h"])
def test_until_rejects_anything_else_naming_the_flag_and_the_forms(value, capsys):
    with pytest.raises(SystemExit):
        study_main(["run", "studies/toy.yaml", "--until", value])
    error = capsys.readouterr().err
    assert "--until" in error and "HH:MM" in error and "1h30m" in error
