"""Every command of the README's ``bash`` blocks runs, on a tiny budget, as a user would type it.

Each block runs in order in one fresh working directory (with ``configs/`` and ``scripts/`` linked in), so
a later command finds what an earlier one wrote (``test --ckpt_path logs/toy_poisson/version_0/...``).
``python -m gengs_lightning.study`` commands run on a copy of the committed results (``run`` as a dry run).
``python -m gengs_lightning`` commands run in-process with budget flags appended (in a subprocess under DDP,
which relaunches its command); scripts run in-process with every CLI call they make on the same budget.
``/path/to/<dataset>`` means the data beside this checkout (``../shared/data``); without it the block is
skipped. Multi-node launches (``torchrun``, ``srun``) have their flags parsed, not run; two nodes are run by
``tests/test_cli_multinode.py``. Installing (``python3 -m venv``, ``pip install``) is what CI does
(``.ci/run``), not a test.
"""

from __future__ import annotations

import glob
import os
import re
import runpy
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import REPO, SHARED_DATA
from torch.distributed.run import get_args_parser

import gengs_lightning.cli

README = (REPO / "README.md").read_text()
#: The smallest run that still trains, validates and tests: appended to every CLI command.
BUDGET = [
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=2",
    "--trainer.limit_val_batches=1",
    "--trainer.limit_test_batches=1",
    "--trainer.limit_predict_batches=1",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]
#: Script arguments appended for a tiny budget (argparse keeps the last value).
SCRIPT_BUDGET = {
    "scripts/reproduce_vae.py": ["--seeds", "0", "--estimators", "GenGSImplicit"],
    "scripts/bench_estimators.py": ["--min-time", "0.001"],
}
#: What the README's placeholders for data folders stand for.
DATA = {
    "/path/to/mnist": SHARED_DATA / "mnist",
    "/path/to/omniglot": SHARED_DATA / "omniglot",
    "/path/to/20news": SHARED_DATA / "20news" / "prodlda_vocab1995",
}
SETUP = (["python3", "-m", "venv"], ["pip", "install"], ["source"])


def readme_blocks() -> list[tuple[str, list[list[str]]]]:
    """``(section heading, commands)`` of every ``bash`` block, each command split into words.

    Continuation lines are joined, comments dropped and ``&&`` chains split into their commands.
    """
    blocks = []
    for match in re.finditer(r"```bash\n(.*?)```", README, re.S):
        heading = re.findall(r"^## (.+)$", README[: match.start()], re.M)[-1]
        commands: list[list[str]] = []
        for line in match.group(1).replace("\\\n", " ").splitlines():
            command: list[str] = []
            for word in [*shlex.split(line, comments=True), "&&"]:
                if word != "&&":
                    command.append(word)
                elif command:
                    commands.append(command)
                    command = []
        blocks.append((heading, commands))
    return blocks


def _program(command: list[str]) -> list[str]:
    """The command with ``.venv/bin/`` dropped from its program: ``["python", "-m", "gengs_lightning", ...]``."""
    return [command[0].removeprefix(".venv/bin/"), *command[1:]]


def _needs_slow_mark(commands: list[list[str]]) -> bool:
    words = " ".join(" ".join(command) for command in commands)
    return any(placeholder in words for placeholder in DATA) or "scripts/bench_" in words


def _resolve(words: list[str], workdir: Path) -> list[str]:
    """Data placeholders replaced by the shared data (skip without it), ``<file>`` by the one file there."""
    resolved = []
    for word in words:
        for placeholder, folder in DATA.items():
            if placeholder in word:
                if not folder.exists():
                    pytest.skip(f"no {folder}")
                word = word.replace(placeholder, str(folder))
        if "<file>" in word:
            matches = sorted(glob.glob(str(workdir / word.replace("<file>", "*"))))
            assert matches, f"{word}: no such file after the commands before it"
            word = matches[0]
        resolved.append(word)
    return resolved


def _run_cli(args: list[str], workdir: Path, parse_only: bool = False) -> None:
    devices = int(args[args.index("--trainer.devices") + 1]) if "--trainer.devices" in args else 1
    if parse_only or ("gpu" in args and torch.cuda.device_count() < devices):
        args = [*args, "--print_config"]  # no GPUs or no second node here: the flags must still parse
    args = [*args, *BUDGET]
    if any("ddp" in arg for arg in args):  # DDP relaunches its command line: run the CLI as a user does
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
        command = [sys.executable, "-m", "gengs_lightning", *args]
        result = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        return
    try:
        gengs_lightning.cli.main(args)
    except SystemExit as stop:  # --print_config
        assert stop.code in (0, None)


def _run_study(args: list[str], workdir: Path) -> None:
    """A study command on the committed results: ``run`` as a dry run (training a study is not a test)."""
    from gengs_lightning.study.__main__ import main as study_main

    if args[0] == "run":
        args = [*args, "--dry-run"]
    if args[0] == "merge":  # merging needs another machine's folder: merge the committed results into a copy
        args = [*args[:2], str(REPO / "results")]
    assert study_main([*args, "--out", str(workdir / "docs" / "results")]) == 0


def _run_script(words: list[str], monkeypatch) -> None:
    script, *arguments = words
    cli_main = gengs_lightning.cli.main
    monkeypatch.setattr(gengs_lightning.cli, "main", lambda args, **kwargs: cli_main([*args, *BUDGET], **kwargs))
    monkeypatch.setattr(sys, "argv", [script, *arguments, *SCRIPT_BUDGET.get(script, [])])
    with torch.set_grad_enabled(torch.is_grad_enabled()):  # scripts/topics.py turns gradients off for good
        runpy.run_path(script, run_name="__main__")


def _run(command: list[str], workdir: Path, monkeypatch) -> None:
    words = _program(command)
    if any(words[: len(setup)] == setup for setup in SETUP):
        return  # installing: .ci/run does it
    if words[:3] == ["python", "-m", "pytest"]:  # the suite itself: CI runs it; the markers it selects exist
        expression = words[words.index("-m", 3) + 1] if "-m" in words[3:] else ""
        assert set(re.findall(r"\w+", expression)) - {"not", "and", "or"} <= {"slow"}
        return
    if words[:3] == ["python", "-m", "gengs_lightning"]:
        _run_cli(_resolve(words[3:], workdir), workdir)
    elif words[:3] == ["python", "-m", "gengs_lightning.study"]:
        _run_study(_resolve(words[3:], workdir), workdir)
    elif words[0] == "python" and words[1].startswith("scripts/"):
        _run_script(_resolve(words[1:], workdir), monkeypatch)
    elif words[0] == "torchrun":  # its flags parse; the CLI's too (tests/test_cli_multinode.py runs two nodes)
        launch = get_args_parser().parse_args(words[1:])
        assert launch.module and launch.training_script == "gengs_lightning"
        _run_cli(_resolve(launch.training_script_args, workdir), workdir, parse_only=True)
    elif words[0] == "srun":
        start = words.index("python")
        assert words[start : start + 3] == ["python", "-m", "gengs_lightning"]
        _run_cli(_resolve(words[start + 3 :], workdir), workdir, parse_only=True)
    elif words[0] == "tensorboard":
        executable = Path(sys.executable).with_name("tensorboard")
        result = subprocess.run([executable, "--helpfull"], capture_output=True, text=True, timeout=120)
        assert "--logdir" in result.stdout + result.stderr
    elif words[0] == "ruff":
        subprocess.run([Path(sys.executable).with_name("ruff"), *words[1:]], cwd=REPO, check=True, timeout=120)
    else:
        pytest.fail(f"no test knows how to run the README command {shlex.join(command)!r}")


@pytest.mark.parametrize(
    ("heading", "commands"),
    [
        pytest.param(heading, commands, id=f"{number}-{heading}", marks=[pytest.mark.slow] * _needs_slow_mark(commands))
        for number, (heading, commands) in enumerate(readme_blocks())
    ],
)
def test_every_readme_command_runs(heading, commands, tmp_path, monkeypatch):
    for folder in ("configs", "scripts", "studies"):
        (tmp_path / folder).symlink_to(REPO / folder)
    if (REPO / "results").exists():  # a copy: study commands may add to it
        shutil.copytree(REPO / "results", tmp_path / "results")
    monkeypatch.chdir(tmp_path)
    for command in commands:
        try:
            _run(command, tmp_path, monkeypatch)
        except Exception as error:
            raise AssertionError(f"README ({heading}): {shlex.join(command)}") from error
