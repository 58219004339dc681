"""scripts/compare_estimators.py runs the toy study's estimators x families through the runner and reports them."""

from __future__ import annotations

import json
import runpy
import sys

from helpers import REPO


def _table(text: str, heading: str) -> dict[str, list[str]]:
    """The rows of the markdown table under ``heading``: first cell -> the other cells."""
    lines = text.split(heading, 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


def test_table_with_variance_per_family_and_vae_cost(tmp_path, monkeypatch, capsys):
    argv = ["compare_estimators.py", "--estimators", "GenGSExplicit", "RF", "GenGSNonparametric", "--jobs", "2"]
    argv += ["--families", "poisson", "multinomial", "--steps", "20", "--vae-steps", "2", "--out", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(REPO / "scripts" / "compare_estimators.py"), run_name="__main__")
    text = (tmp_path / "comparison.md").read_text()
    loss = _table(text, "## `train/exact_loss`")
    assert list(loss) == ["GenGSExplicit", "GenGSNonparametric", "RF"]  # the study's order
    # nonparametric truncation needs a count family: the multinomial cell says so instead of stopping the run
    assert loss["GenGSNonparametric"][1] == "n/a"
    for name in ("GenGSExplicit", "RF"):
        for cell in loss[name]:
            assert 0 < float(cell.split()[0].strip("*")) < 1000
    early = _table(text, "## gradient variance, mean log10 over the first fifth of training")
    # the score-function variance on Poisson(20) is well above GenGS's early on (paper Figure 3)
    assert float(early["RF"][0].split()[0].strip("*")) > float(early["GenGSExplicit"][0].split()[0].strip("*")) + 0.5
    cost = _table(text, "## Cost on the MNIST VAE")
    assert cost["GenGSExplicit"] == ["1.00x"] and float(cost["RF"][0][:-1]) > 0
    result = json.loads((tmp_path / "results" / "toy" / "cpu" / "poisson__RF__seed0.json").read_text())
    assert result["status"] == "done" and result["config"]["trainer"]["max_steps"] == 20
    assert (tmp_path / "toy" / "train_exact_loss.png").stat().st_size > 1000
