"""scripts/bench_parallel_runs.py times two CLI runs one after the other and at once, and says which is faster."""

from __future__ import annotations

import subprocess
import sys

from helpers import CONFIGS, REPO


def test_times_both_modes_and_names_the_faster(tmp_path):
    args = [
        "--config",
        str(CONFIGS / "toy" / "poisson.yaml"),
        "--trainer.max_steps=5",
        "--trainer.logger.init_args.name=b",
    ]
    out = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench_parallel_runs.py"), "--cores", "2", "--", *args],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,  # the runs' logs/ go there, not into the checkout
    ).stdout
    lines = out.splitlines()
    assert lines[0].startswith("two runs one after the other, 2 threads each:") and lines[0].endswith(" s")
    assert lines[1].startswith("two runs at once, 1 thread(s) each:")
    ratio = float(lines[2].split(":")[1].split("x")[0])
    assert ratio > 0 and ("at once is faster" in lines[2]) == (ratio > 1)


def test_a_failing_run_is_reported(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench_parallel_runs.py"), "--", "--config", "no/such.yaml"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode != 0 and "a run failed" in result.stderr
