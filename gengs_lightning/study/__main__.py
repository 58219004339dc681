"""``python -m gengs_lightning.study {run,status,merge,report} studies/<name>.yaml``.

Examples::

    python -m gengs_lightning.study run studies/toy.yaml --jobs 2              # the missing runs, two at a time
    python -m gengs_lightning.study run studies/toy.yaml --dry-run             # one command per missing run
    python -m gengs_lightning.study run studies/table1_mnist.yaml --budget paper --set data.data_dir=/data/mnist
    python -m gengs_lightning.study run studies/table1_mnist.yaml --only 'Geom.25/*/seed0' '*/seed1' --until 2h30m
    python -m gengs_lightning.study status studies/toy.yaml
    python -m gengs_lightning.study merge studies/toy.yaml /other/machine/results
    python -m gengs_lightning.study report studies/toy.yaml                    # docs/results/toy.md + PNGs
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

from gengs_lightning.study.report import write_report
from gengs_lightning.study.runner import Layout, merge, pending, run_state, run_study, select
from gengs_lightning.study.spec import Study, StudyError


def _overrides(values: list[str]) -> dict[str, str]:
    """``--set flag=value`` pairs (the CLI flag without its dashes) as ``{"--flag": "value"}``."""
    overrides = {}
    for value in values:
        flag, equals, setting = value.partition("=")
        if not flag or flag.startswith("-") or not equals:
            raise StudyError(
                f"--set takes a CLI flag without its dashes and a value, e.g. data.data_dir=/data; got {value!r}"
            )
        overrides[f"--{flag}"] = setting
    return overrides


def _until(value: str) -> float:
    """The ``--until`` deadline as seconds since the epoch.

    Args:
        value: A clock time ``HH:MM`` (its next occurrence, local time) or a duration from now: ``90m``,
            ``2h``, ``1h30m``.
    """
    now = datetime.now()
    clock = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)", value)
    if clock:
        at = now.replace(hour=int(clock[1]), minute=int(clock[2]), second=0, microsecond=0)
        return (at if at > now else at + timedelta(days=1)).timestamp()
    duration = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?", value)
    if value and duration:
        return time.time() + 3600 * int(duration[1] or 0) + 60 * int(duration[2] or 0)
    raise argparse.ArgumentTypeError(f"takes a clock time HH:MM or a duration like 90m, 2h or 1h30m; got {value!r}")


def _dry_run(study: Study, args: argparse.Namespace, layout: Layout) -> None:
    """Print one command per pending run: it trains the run and writes its result file."""
    budget, _ = study.budget(args.budget)
    runs = select(study.runs(budget, _overrides(args.set)), args.only)
    for run in pending(runs, budget, layout, args.rerun_stale):
        words = [sys.executable, "-m", "gengs_lightning.study", "run", str(study.path), "--only", run.id]
        words += ["--budget", budget, "--results", str(layout.results), "--runs", str(layout.runs)]
        for value in args.set:
            words += ["--set", value]
        print(shlex.join(words))


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run it; a bad study file or flag ends with one line on stderr."""
    parser = argparse.ArgumentParser(
        prog="python -m gengs_lightning.study",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("action", choices=["run", "status", "merge", "report"])
    parser.add_argument("study", help="the study file, e.g. studies/toy.yaml")
    parser.add_argument("sources", nargs="*", help="merge: results folders to copy missing result files from")
    parser.add_argument("--budget", default=None, help="budget name (default: the study's first)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once")
    parser.add_argument("--threads", type=int, default=None, help="threads per run (default: cores / jobs)")
    parser.add_argument("--only", nargs="*", default=[], help="glob patterns on run ids, e.g. 'poisson2/*/seed0'")
    parser.add_argument(
        "--set", action="append", default=[], metavar="FLAG=VALUE", help="override a study flag (data.data_dir=/data)"
    )
    parser.add_argument("--rerun-stale", action="store_true", help="rerun runs whose study arguments changed")
    parser.add_argument(
        "--until",
        type=_until,
        default=None,
        metavar="HH:MM|DURATION",
        help="start no run after this clock time or duration (05:50, 2h30m); started runs finish",
    )
    parser.add_argument("--dry-run", action="store_true", help="print one command per pending run instead")
    parser.add_argument("--results", type=Path, default=Path("results"), help="results root (default: results)")
    parser.add_argument("--runs", type=Path, default=Path("runs"), help="log folders root (default: runs)")
    parser.add_argument("--out", type=Path, default=Path("docs/results"), help="report folder (default: docs/results)")
    args = parser.parse_args(argv)
    layout = Layout(args.results, args.runs)
    try:
        if args.jobs < 1 or (args.threads is not None and args.threads < 1):
            raise StudyError(f"--jobs and --threads must be >= 1, got {args.jobs} and {args.threads}")
        study = Study.load(args.study)
        if args.action == "run" and args.dry_run:
            _dry_run(study, args, layout)
        elif args.action == "run":
            results = run_study(
                study,
                args.budget,
                layout,
                args.jobs,
                args.threads,
                args.only,
                _overrides(args.set),
                args.rerun_stale,
                args.until,
            )
            failed = [r["run"] for r in results if r["status"] == "failed"]
            if failed:
                print(f"failed runs (see their output.log under {layout.runs}): {', '.join(failed)}", file=sys.stderr)
                return 1
        elif args.action == "status":
            budget, _ = study.budget(args.budget)
            runs = select(study.runs(budget), args.only)
            states = {run.id: run_state(run, budget, layout) for run in runs}
            for run_id, state in states.items():
                print(f"{state:>8}  {run_id}")
            print(", ".join(f"{n} {state}" for state, n in sorted(Counter(states.values()).items())))
        elif args.action == "merge":
            if not args.sources:
                raise StudyError("merge needs at least one results folder to copy from")
            merge([Path(s) for s in args.sources], study, layout)
        else:
            print(write_report(study, args.budget, layout, args.out))
    except (StudyError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
