"""scripts/compare_estimators.py trains estimators x families through the CLI and writes the table and curves."""

from __future__ import annotations

import runpy
import sys

from helpers import REPO


def test_table_with_variance_per_family_and_vae_cost(tmp_path, monkeypatch, capsys):
    argv = ["compare_estimators.py", "--estimators", "GenGSExplicit", "Reinforce", "VIMCO", "GenGSNonparametric"]
    argv += ["--families", "poisson", "multinomial", "--steps", "20", "--vae-steps", "2", "--out", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(REPO / "scripts" / "compare_estimators.py"), run_name="__main__")
    rows = [line.split("|")[1:-1] for line in (tmp_path / "comparison.md").read_text().splitlines()]
    rows = {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in rows if len(cells) == 4}
    assert set(rows) >= {"GenGSExplicit", "Reinforce", "VIMCO", "GenGSNonparametric"}

    def parse(cell: str) -> tuple[float, float, float]:
        """``early / all; loss`` -> numbers."""
        variances, loss = cell.split(";")
        early, whole = variances.split("/")
        return float(early), float(whole), float(loss)

    for name in ("GenGSExplicit", "Reinforce", "VIMCO"):
        poisson, multinomial, cost = rows[name]
        for early, whole, loss in (parse(poisson), parse(multinomial)):
            assert -10 < early < 10 and -10 < whole < 10 and 0 < loss < 1000
        assert cost.endswith("x") and float(cost[:-1]) > 0
    assert rows["GenGSExplicit"][2] == "1.00x"
    # nonparametric truncation needs a count family: the multinomial cell says so instead of stopping the run
    assert rows["GenGSNonparametric"][1] == "n/a" and parse(rows["GenGSNonparametric"][0])[0] < 10
    # the score-function variance on Poisson(20) is well above GenGS's early on (paper Figure 3; 14x in this run)
    assert parse(rows["Reinforce"][0])[0] > parse(rows["GenGSExplicit"][0])[0] + 0.5  # 3x
    for png in ("toy_loss.png", "toy_variance.png"):
        assert (tmp_path / png).stat().st_size > 1000
