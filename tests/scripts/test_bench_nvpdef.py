"""scripts/bench_nvpdef.py measures documents per second and peak memory for Lightning and a plain loop."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from helpers import REPO, SHARED_DATA

TWENTY_NEWS = SHARED_DATA / "20news" / "prodlda_vocab1995"


@pytest.mark.skipif(not TWENTY_NEWS.exists(), reason="the shared 20News corpus is not beside the repository")
def test_reports_throughput_ratio_and_memory_for_both_loops():
    command = [sys.executable, str(REPO / "scripts" / "bench_nvpdef.py"), f"--data-dir={TWENTY_NEWS}"]
    output = subprocess.run(command + ["--steps=4", "--rounds=1"], check=True, capture_output=True, text=True).stdout
    pattern = r"^(plain|lightning)\s*: +(\d+) documents/s \([\d.]+x plain\), peak memory (\d+) MiB"
    rows = {mode: (int(rate), int(memory)) for mode, rate, memory in re.findall(pattern, output, re.M)}
    assert set(rows) == {"plain", "lightning"}, output
    assert all(rate > 0 and memory > 0 for rate, memory in rows.values())
    assert "20news.yaml" in output and "1.00x plain" in output
