"""The benchmark script runs and reports every estimator against F.gumbel_softmax."""

from __future__ import annotations

import runpy

import pytest
import torch
from helpers import REPO


def test_benchmark_rows_cover_reference_and_every_estimator():
    bench = runpy.run_path(str(REPO / "scripts" / "bench_estimators.py"))
    rows = bench["bench_shape"](8, 3, 10, torch.device("cpu"), min_time=0.01, rounds=1)
    labels = [row[0] for row in rows]
    assert labels[0] == "F.gumbel_softmax"
    for name in bench["ESTIMATORS"]:
        assert name in labels and f"{name} +KL" in labels
    for _, shape, seconds, ratio, rate, saved, _ in rows:
        assert shape == (8, 3, 10) and seconds > 0 and ratio > 0 and rate > 0 and saved > 0


@pytest.mark.slow  # two torch.compile builds, ~25 s
def test_compile_adds_a_compiled_row_per_estimator_and_kl():
    bench = runpy.run_path(str(REPO / "scripts" / "bench_estimators.py"))
    rows = bench["bench_shape"](
        2, 2, 4, torch.device("cpu"), min_time=0.01, rounds=1, names=["GenGSImplicit"], compile=True
    )
    labels = [row[0] for row in rows]
    assert labels == [
        "F.gumbel_softmax",
        "GenGSImplicit",
        "GenGSImplicit compiled",
        "GenGSImplicit +KL",
        "GenGSImplicit +KL compiled",
    ]
