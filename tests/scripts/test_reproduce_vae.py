"""scripts/reproduce_vae.py runs estimators x seeds through the CLI and writes a table and curves."""

from __future__ import annotations

import runpy
import sys

import pytest
from helpers import REPO


def test_table_and_curves_for_two_estimators_and_two_seeds(tmp_path, monkeypatch, capsys):
    argv = [
        "reproduce_vae.py",
        "--dataset",
        "digits",
        "--prior",
        "poisson2",
        "--epochs",
        "1",
        "--estimators",
        "GenGSExplicit",
        "GenGSImplicit",
        "--seeds",
        "0",
        "1",
        "--out",
        str(tmp_path),
    ]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(REPO / "scripts" / "reproduce_vae.py"), run_name="__main__")
    table = (tmp_path / "results.md").read_text().splitlines()
    rows = [line for line in table if line.startswith("| GenGS")]
    assert [row.split("|")[1].strip() for row in rows] == ["GenGSExplicit", "GenGSImplicit"]
    for row in rows:
        elbo, nll = row.split("|")[3:5]
        assert "+-" in elbo and float(elbo.split("+-")[0]) > float(nll.split("+-")[0]) - 1.0  # IW bound is tighter
    assert (tmp_path / "curves.png").stat().st_size > 1000
    assert (tmp_path / "GenGSImplicit_seed1").is_dir()


def test_unknown_config_lists_the_available_ones(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["reproduce_vae.py", "--dataset", "digits", "--prior", "gamma"])
    with pytest.raises(SystemExit, match="no config digits_gamma.yaml; available: digits_poisson2, mnist_geometric025"):
        runpy.run_path(str(REPO / "scripts" / "reproduce_vae.py"), run_name="__main__")
