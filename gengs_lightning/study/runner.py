"""Run a study's missing runs through the real command line and keep one result file per run.

Each run is ``python -m gengs_lightning <args>`` in a subprocess (``OMP_NUM_THREADS`` set to its share
of the cores), logging under ``<runs>/<study>/<budget>/<run>/version_0``. When it ends, the runner reads
its TensorBoard events and saved ``config.yaml`` and writes ``<results>/<study>/<budget>/<run>.json``:
the axes, the arguments and their hash, the resolved config and its hash, the status (``done``,
``diverged`` when training stopped on a non-finite loss, ``failed`` otherwise), the last value of every
scalar, the curves of ``val/*`` and the study's extra tags, the wall time, the machine and the git
commit of the code (with a flag for uncommitted changes; run studies from a clean checkout, e.g. a
``git worktree``, while the code is being edited). A run whose
file exists with the same argument hash is skipped, so a study continues where it stopped, on any
machine, and result files from several machines merge by copying (:func:`merge`). Failed runs are run
again; diverged ones are results.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import yaml

from gengs_lightning.study.spec import Run, Study

#: Points kept per curve (evenly thinned beyond that, first and last kept).
MAX_CURVE_POINTS = 250
#: Result file format version.
RESULT_VERSION = 1


@dataclass(frozen=True)
class Layout:
    """Where a study's results and run folders live.

    Attributes:
        results: Root of the committed result files (``results``).
        runs: Root of the runs' log folders (``runs``, not committed: event files and checkpoints).
    """

    results: Path = Path("results")
    runs: Path = Path("runs")

    def result_file(self, run: Run, budget: str) -> Path:
        return self.results / run.study / budget / f"{run.file_stem}.json"

    def run_dir(self, run: Run, budget: str) -> Path:
        return self.runs / run.study / budget / run.file_stem

    def lock_file(self, run: Run, budget: str) -> Path:
        return self.runs / run.study / budget / f"{run.file_stem}.lock"


def _alive(lock: Path) -> bool:
    """Whether the lock names a process of this machine that is still running."""
    try:
        host, pid = lock.read_text().split()
        if host != socket.gethostname():
            return True  # another machine's run: trust its lock
        os.kill(int(pid), 0)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def claim(run: Run, budget: str, layout: Layout) -> bool:
    """Take the run's lock (``<runs>/<study>/<budget>/<run>.lock``) unless a live runner holds it.

    So that two runners on one study (two shells, or a restarted one while its old runs finish) never run
    the same run twice. A lock left by a process that no longer exists is taken over.
    """
    lock = layout.lock_file(run, budget)
    lock.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            with open(lock, "x") as handle:
                handle.write(f"{socket.gethostname()} {os.getpid()}\n")
            return True
        except FileExistsError:
            if _alive(lock):
                return False
            lock.unlink(missing_ok=True)
    return False


def read_result(path: Path) -> dict[str, Any] | None:
    """A result file's content, or ``None`` if it does not exist."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def run_state(run: Run, budget: str, layout: Layout) -> str:
    """The state of a run: ``missing``, ``running``, ``stale``, ``failed``, ``done`` or ``diverged``.

    ``running``: a live runner holds its lock; ``stale``: its result was made with other arguments.
    """
    result = read_result(layout.result_file(run, budget))
    lock = layout.lock_file(run, budget)
    if (result is None or result["status"] == "failed") and lock.exists() and _alive(lock):
        return "running"
    if result is None:
        return "missing"
    if result.get("args_hash") != run.args_hash:
        return "stale"
    return result["status"]


def pending(runs: Iterable[Run], budget: str, layout: Layout, rerun_stale: bool = False) -> list[Run]:
    """The runs still to do: missing and failed ones, and stale ones if ``rerun_stale``."""
    todo = {"missing", "failed"} | ({"stale"} if rerun_stale else set())
    return [run for run in runs if run_state(run, budget, layout) in todo]


def command(run: Run, budget: str, layout: Layout) -> list[str]:
    """The full command line of a run (the CLI with the runner's logging flags)."""
    run_dir = layout.run_dir(run, budget)
    return [
        sys.executable,
        "-m",
        "gengs_lightning",
        *run.args,
        f"--trainer.logger.init_args.save_dir={run_dir.parent}",
        f"--trainer.logger.init_args.name={run_dir.name}",
        "--trainer.logger.init_args.version=0",
        "--progress_bar_refresh_rate=0",
    ]


def execute(run: Run, budget: str, layout: Layout, threads: int, extra_tags: Sequence[str] = ()) -> dict[str, Any]:
    """Run one study run to completion and write its result file.

    Args:
        run: The run.
        budget: The budget's name (a folder level of the result file).
        layout: Where results and logs go.
        threads: Value of ``OMP_NUM_THREADS`` (and ``MKL_NUM_THREADS``) for the run.
        extra_tags: Scalar tags besides ``val/*`` whose curves are kept (e.g. ``train/grad_var``).

    Returns:
        The result written.
    """
    run_dir = layout.run_dir(run, budget)
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    start = time.monotonic()
    with open(run_dir / "output.log", "w") as output:
        code = subprocess.run(command(run, budget, layout), stdout=output, stderr=subprocess.STDOUT, env=env).returncode
    wall = time.monotonic() - start
    result = collect(run, budget, run_dir, code, wall, threads, extra_tags)
    path = layout.result_file(run, budget)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    temporary.replace(path)
    return result


def collect(
    run: Run, budget: str, run_dir: Path, returncode: int, wall_time: float, threads: int, extra_tags: Sequence[str]
) -> dict[str, Any]:
    """The result of a finished run, read from its log folder."""
    log = (run_dir / "output.log").read_text(errors="replace") if (run_dir / "output.log").exists() else ""
    status, error = _status(returncode, log)
    version = run_dir / "version_0"
    config_file = version / "config.yaml"
    config_text = config_file.read_text() if config_file.exists() else ""
    scalars = read_scalars(version)
    curves = {tag: thin(points) for tag, points in scalars.items() if tag.startswith("val/") or tag in set(extra_tags)}
    return {
        "format": RESULT_VERSION,
        "study": run.study,
        "run": run.id,
        "budget": budget,
        "axes": run.axes,
        "args": list(run.args),
        "args_hash": run.args_hash,
        "config": yaml.safe_load(config_text) if config_text else None,
        "config_hash": hashlib.sha256(config_text.encode()).hexdigest()[:16] if config_text else None,
        "status": status,
        "error": error,
        "final": {tag: points[-1][1] for tag, points in scalars.items() if points},
        "curves": curves,
        "wall_time_s": round(wall_time, 1),
        "machine": machine(threads),
        "code": code_version(),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _status(returncode: int, log: str) -> tuple[str, str | None]:
    """``done``, ``diverged`` (the model's non-finite-loss stop) or ``failed``, with the error line."""
    if returncode == 0:
        return "done", None
    lines = [line for line in log.splitlines() if line.strip()]
    diverged = [line for line in lines if line.startswith("FloatingPointError")]
    if diverged:
        return "diverged", diverged[-1]
    return "failed", "\n".join(lines[-3:]) or f"exit code {returncode}"


def read_scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series in a TensorBoard log folder, ``tag -> [(step, value), ...]`` sorted by step."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    series: dict[str, dict[int, float]] = {}
    for events in sorted(log_dir.glob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            for event in accumulator.Scalars(tag):
                series.setdefault(tag, {})[event.step] = float(event.value)
    return {tag: sorted(points.items()) for tag, points in series.items()}


def thin(points: Sequence[tuple[int, float]], limit: int = MAX_CURVE_POINTS) -> list[tuple[int, float]]:
    """At most ``limit`` evenly spaced points of a curve, the first and the last included."""
    if len(points) <= limit:
        return [tuple(p) for p in points]
    picks = sorted({round(i * (len(points) - 1) / (limit - 1)) for i in range(limit)})
    return [tuple(points[i]) for i in picks]


def machine(threads: int) -> dict[str, Any]:
    """What the run ran on: versions, CPU model, cores and threads, GPU name if any."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": threads,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def code_version() -> dict[str, Any] | None:
    """The git commit of the working directory and whether it had uncommitted changes (``None`` outside git)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout
        changes = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return {"commit": commit.strip(), "dirty": bool(changes.strip())}


def run_study(
    study: Study,
    budget: str | None = None,
    layout: Layout = Layout(),
    jobs: int = 1,
    threads: int | None = None,
    only: Sequence[str] = (),
    overrides: dict[str, str] | None = None,
    rerun_stale: bool = False,
    until: float | None = None,
    log=print,
) -> list[dict[str, Any]]:
    """Run every pending run of a study, ``jobs`` at a time, in the order of :func:`select`.

    Args:
        study: The study.
        budget: Budget name (default: the study's first).
        layout: Where results and logs go.
        jobs: Runs at once.
        threads: Threads per run (default: the machine's cores divided by ``jobs``).
        only: Glob patterns on run ids (``poisson2/*/seed0``); empty runs everything.
        overrides: Flags replacing the study's own for every run (``--data.data_dir``); they enter the
            argument hash, except ``--data.data_dir`` (machine-specific).
        rerun_stale: Also rerun runs whose result file has another argument hash.
        until: No run starts after this time (seconds since the epoch, as ``time.time()``); runs already
            started finish. For a machine that is taken away at a known hour: every result written is whole.
        log: Where progress lines go.

    Returns:
        The results written by this call.
    """
    budget, _ = study.budget(budget)
    runs = select(study.runs(budget, overrides), only)
    todo = pending(runs, budget, layout, rerun_stale)
    threads = threads or max(1, (os.cpu_count() or 1) // jobs)
    log(f"study {study.name} ({budget}): {len(runs)} runs, {len(runs) - len(todo)} done or running, {len(todo)} to run")

    def one(run: Run) -> dict[str, Any] | None:
        if until is not None and time.time() >= until:
            log(f"not started {run.id}: past --until")
            return None
        if not claim(run, budget, layout):
            log(f"skip {run.id}: another runner is running it")
            return None
        try:
            if run_state(run, budget, layout) in ("done", "diverged"):  # another runner finished it meanwhile
                log(f"skip {run.id}: another runner has finished it")
                return None
            log(f"start {run.id}")
            result = execute(run, budget, layout, threads, study.curve_tags)
        finally:
            layout.lock_file(run, budget).unlink(missing_ok=True)
        log(f"{result['status']:>8} {run.id} in {result['wall_time_s']:.0f} s {_headline(result)}")
        return result

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return [result for result in pool.map(one, todo) if result is not None]


def select(runs: Sequence[Run], only: Sequence[str]) -> list[Run]:
    """The runs whose id matches one of the glob patterns, in the order of the patterns.

    Within a pattern, and for every run without patterns, the study's order holds: ``--only
    'Geom.25/*/seed0' '*/seed1'`` takes every seed 0 of Geom.25 before any seed 1.
    """
    from fnmatch import fnmatchcase

    if not only:
        return list(runs)
    chosen = {}
    for pattern in only:
        chosen.update({run.id: run for run in runs if run.id not in chosen and fnmatchcase(run.id, pattern)})
    return list(chosen.values())


def _headline(result: dict[str, Any]) -> str:
    tests = {k: v for k, v in result["final"].items() if k.startswith("test/")}
    return " ".join(f"{k}={v:.4g}" for k, v in sorted(tests.items()))


def merge(sources: Sequence[Path], study: Study, layout: Layout = Layout(), log=print) -> int:
    """Copy into ``results/<study>/`` the result files of other folders that it lacks.

    A source is a results root (holding ``<study>/<budget>/*.json``) or a study folder itself. A file
    present on both sides with different argument hashes is reported and left as it is here.

    Returns:
        The number of files copied.
    """
    copied = 0
    target_root = layout.results / study.name
    for source in sources:
        source = Path(source)
        root = source / study.name if (source / study.name).is_dir() else source
        for path in sorted(root.glob("*/*.json")):
            target = target_root / path.relative_to(root)
            theirs = json.loads(path.read_text())
            if theirs.get("study") != study.name:
                continue
            ours = read_result(target)
            if ours is None or (ours["status"] == "failed" and theirs["status"] != "failed"):
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target)
                copied += 1
            elif ours.get("args_hash") != theirs.get("args_hash"):
                log(f"conflict: {target} has arguments {ours.get('args_hash')}, {path} has {theirs.get('args_hash')}")
    log(f"merged {copied} result file(s) into {target_root}")
    return copied
