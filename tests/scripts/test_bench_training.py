"""scripts/bench_training.py times Lightning set-ups of the MNIST VAE against an interleaved plain loop."""

from __future__ import annotations

import re
import subprocess
import sys

from helpers import REPO

SCRIPT = REPO / "scripts" / "bench_training.py"
ROW = re.compile(r"^(.+?)\s*:\s+([\d.]+)\s+([\d.]+)\s+([+-][\d.]+)% \(.*?\)\s+([+-][\d.]+)% \(.*?\)$", re.M)


def test_reports_every_setup_against_the_plain_loop():
    command = [sys.executable, str(SCRIPT), "--steps=8", "--rounds=1", "--batch-size=16"]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    rows = {label.strip(): values for label, *values in ROW.findall(output)}
    assert list(rows) == [
        "Lightning, bare module",
        "Lightning, gengs VAE",
        "+ tau schedule, bar every 10",
        "+ tau schedule, bar every step",
    ], output
    for lightning_ms, plain_ms, total, _median in rows.values():
        lightning_ms, plain_ms = float(lightning_ms), float(plain_ms)
        assert lightning_ms > 0 and plain_ms > 0
        # The overhead is the ratio of the two step times; both are printed rounded to 0.005 ms and the
        # overhead to 0.05 percentage points.
        lowest = 100 * ((lightning_ms - 0.005) / (plain_ms + 0.005) - 1) - 0.05
        highest = 100 * ((lightning_ms + 0.005) / (plain_ms - 0.005) - 1) + 0.05
        assert lowest <= float(total) <= highest
    assert "batch 16, steps 8 per run, rounds 1" in output


def test_rejects_too_few_steps():
    result = subprocess.run([sys.executable, str(SCRIPT), "--steps=3"], capture_output=True, text=True)
    assert result.returncode == 2
    assert "--steps must be at least 5, got 3" in result.stderr
