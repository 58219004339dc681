"""Turn a study's result files into ``docs/results/<study>.md`` and PNG curves.

The study file's ``report`` section lays the tables out (every key optional but ``rows``)::

    report:
      rows: estimator                  # axis (or list of axes) of the table's rows
      columns: prior                   # axis of its columns; without it one column
      metric: test/loss                # a tag's last value, best:<tag> (its curve's minimum), mean:<tag>,
                                       # log10mean:<tag>, log10early:<tag> (the first fifth of the curve),
                                       # or wall_time_s (the run's seconds)
      label: test negative ELBO
      also: [test/nll_iw]              # further tables, same layout
      higher_is_better: [test/npmi]   # metrics whose best is the largest (the others: the smallest)
      digits: 2                        # decimals; or per metric: {default: 1, test/npmi: 3}
      highlight: [GenGSExplicit, GenGSImplicit]   # rows whose claim is tested against all others
      baselines: [RFstar, NVIL]        # or only against these (rows whose metric is comparable)
      paper: {poisson2: {GenGSExplicit: 96.04}}   # column -> row -> the paper's number
      cost: train/objective_evals      # a cost per run: the rows compared at equal and at lower cost
      cost_metrics: [test/loss]        # ... on these metrics (default: metric)
      curve: val/loss                  # plotted per column, mean over the other axes (seeds)
      curves_extra: [train/grad_var]   # kept by the runner and plotted on a log scale

Every axis that is neither a row nor a column is a replicate axis (seeds): a cell is ``mean +- std``
over its runs, with the number of runs; an excluded combination is ``n/a``; the best cell of a column is
bold; a cell with diverged runs says how many (and averages the others), one with no finished run
says ``diverged``, ``failed`` or ``-``. With ``highlight``, each column gets a verdict: is the best
highlighted row better than every other row by more than the seed-to-seed spread (mean + std against
mean - std; ``n/a`` when both have a single run)? With ``cost``, each column also gets the best row at
every cost (among the highlighted rows and the baselines, when named) and the cost frontier: the rows
that no cheaper or equally cheap row beats.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gengs_lightning.study.runner import Layout, read_result, select
from gengs_lightning.study.spec import Run, Study


def _log10_mean(values: Sequence[float]) -> float | None:
    """Mean of ``log10`` over the positive values (gradient variances span orders of magnitude)."""
    logs = [math.log10(v) for v in values if v > 0]
    return statistics.mean(logs) if logs else None


#: ``<prefix>:<tag>`` metrics: a summary of the tag's curve.
CURVE_SUMMARIES = {
    "best": min,
    "mean": statistics.mean,
    "log10mean": _log10_mean,
    "log10early": lambda values: _log10_mean(values[: max(1, len(values) // 5)]),
}


def digits_of(spec: dict[str, Any], metric: str) -> int:
    """Decimals shown for ``metric``: ``digits`` (2 by default), or its entry in a per-metric ``digits`` map."""
    digits = spec.get("digits", 2)
    if isinstance(digits, dict):
        digits = digits.get(metric, digits.get("default", 2))
    return int(digits)


def load_results(runs: Sequence[Run], budget: str, layout: Layout = Layout()) -> dict[str, dict[str, Any]]:
    """Run id -> result for every run that has a current (not stale) result file."""
    results = {}
    for run in runs:
        result = read_result(layout.result_file(run, budget))
        if result is not None and result.get("args_hash") == run.args_hash:
            results[run.id] = result
    return results


def metric_value(result: dict[str, Any], metric: str) -> float | None:
    """``metric`` of a finished result (``None`` for a run that did not finish).

    A tag's last value, a summary of its curve (``best:<tag>``, any prefix of :data:`CURVE_SUMMARIES`), or
    ``wall_time_s``.
    """
    if result["status"] != "done":
        return None
    if metric == "wall_time_s":
        return result["wall_time_s"]
    kind, _, tag = metric.rpartition(":")
    if kind not in CURVE_SUMMARIES and kind:
        raise ValueError(f"report metric {metric!r}: the prefix must be one of {', '.join(CURVE_SUMMARIES)}")
    if kind:
        curve = [value for _, value in result["curves"].get(tag, [])]
        return CURVE_SUMMARIES[kind](curve) if curve else None
    value = result["final"].get(metric)
    return None if value is None or not math.isfinite(value) else value


class Cell:
    """The runs of one row and column: their metric values and how the others ended."""

    def __init__(self, results: Sequence[dict[str, Any] | None], metric: str):
        self.values = [v for r in results if r is not None and (v := metric_value(r, metric)) is not None]
        self.diverged = sum(1 for r in results if r is not None and r["status"] == "diverged")
        self.failed = sum(1 for r in results if r is not None and r["status"] == "failed")
        self.expected = len(results)

    @property
    def mean(self) -> float | None:
        return statistics.mean(self.values) if self.values else None

    @property
    def std(self) -> float:
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0

    def summary(self, digits: int) -> str:
        """``mean +- std`` over two runs or more, ``mean (one run)`` for one (no spread to state)."""
        if len(self.values) > 1:
            return f"{self.mean:.{digits}f} +- {self.std:.{digits}f}"
        return f"{self.mean:.{digits}f} (one run)"

    def text(self, digits: int, bold: bool) -> str:
        if not self.expected:
            return "n/a"
        if not self.values:
            if self.diverged:
                return f"diverged ({self.diverged}/{self.expected})"
            return "failed" if self.failed else "-"
        body = f"{self.mean:.{digits}f}"
        if len(self.values) > 1:
            body += f" +- {self.std:.{digits}f}"
        body = f"**{body}**" if bold else body
        notes = [f"n={len(self.values)}"]
        if self.diverged:
            notes.append(f"{self.diverged} diverged")
        if self.failed:
            notes.append(f"{self.failed} failed")
        return f"{body} ({', '.join(notes)})"


class Arrangement:
    """The study's runs arranged by the report's rows, columns and replicate axes."""

    def __init__(self, study: Study, runs: Sequence[Run], results: dict[str, dict[str, Any]], subset: bool = False):
        spec = study.report
        rows = spec.get("rows")
        if rows is None:
            raise ValueError(f"{study.path}: report.rows must name an axis of the grid ({', '.join(study.axes)})")
        self.row_axes = [rows] if isinstance(rows, str) else list(rows)
        self.column_axis = spec.get("columns")
        for axis in [*self.row_axes, *([self.column_axis] if self.column_axis else [])]:
            if axis not in study.axes:
                raise ValueError(f"{study.path}: report axis {axis!r} is not in the grid ({', '.join(study.axes)})")
        self.runs = list(runs)
        self.results = results
        names = [[s.name for s in study.axes[axis]] for axis in self.row_axes]
        self.rows = [", ".join(combination) for combination in itertools.product(*names)]
        self.columns = [s.name for s in study.axes[self.column_axis]] if self.column_axis else [""]
        if subset:  # a selection of the grid: only the rows and columns it has runs in
            self.rows = [r for r in self.rows if any(self.row_key(run) == r for run in self.runs)]
            self.columns = [c for c in self.columns if any(self.column_key(run) == c for run in self.runs)]

    def row_key(self, run: Run) -> str:
        return ", ".join(run.axes[a] for a in self.row_axes)

    def column_key(self, run: Run) -> str:
        return run.axes[self.column_axis] if self.column_axis else ""

    def cell(self, row: str, column: str, metric: str) -> Cell:
        members = [r for r in self.runs if self.row_key(r) == row and self.column_key(r) == column]
        return Cell([self.results.get(r.id) for r in members], metric)

    def runs_of(self, row: str, column: str) -> list[dict[str, Any]]:
        members = [r for r in self.runs if self.row_key(r) == row and self.column_key(r) == column]
        return [self.results[r.id] for r in members if r.id in self.results]


def table(arranged: Arrangement, metrics: Sequence[str], spec: dict[str, Any]) -> list[str]:
    """Markdown lines of one table, the paper's number beside ours where it has one.

    With a column axis, one metric (the first) by rows and columns; without one, the rows by ``metrics``.
    The best mean of every column is bold (the lowest, or the highest for ``higher_is_better`` metrics).
    """
    higher = set(spec.get("higher_is_better") or ())
    paper = spec.get("paper") or {}
    if arranged.column_axis is None:
        if paper and not isinstance(next(iter(paper.values())), dict):
            paper = {"": paper}
        columns = [(metric, "") for metric in metrics]
    else:
        columns = [(metrics[0], column) for column in arranged.columns]
    header = [" / ".join(arranged.row_axes)]
    for metric, column in columns:
        header.append(column or metric)
        if metric == metrics[0] and column in paper:
            header.append(f"{column} (paper)" if column else "paper")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    best = {}
    for metric, column in columns:
        means = [c.mean for row in arranged.rows if (c := arranged.cell(row, column, metric)).mean is not None]
        best[metric, column] = ((max if metric in higher else min)(means)) if means else None
    for row in arranged.rows:
        cells = [row]
        for metric, column in columns:
            cell = arranged.cell(row, column, metric)
            cells.append(
                cell.text(digits_of(spec, metric), cell.mean is not None and cell.mean == best[metric, column])
            )
            if metric == metrics[0] and column in paper:
                value = paper[column].get(row)
                cells.append("" if value is None else str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _sign(spec: dict[str, Any], metric: str) -> float:
    """``1`` for a metric whose best is the smallest, ``-1`` for one in ``higher_is_better``."""
    return -1.0 if metric in set(spec.get("higher_is_better") or ()) else 1.0


def _ahead(best: Cell, other: Cell, sign: float) -> str:
    """``yes`` if ``best``'s mean + std is beyond ``other``'s mean - std (in the metric's direction), else ``no``.

    With one run in each cell there is no spread to compare with: ``n/a (one seed each)``.
    """
    if len(best.values) < 2 and len(other.values) < 2:
        return "n/a (one seed each)"
    return "yes" if sign * (other.mean - best.mean) - (best.std + other.std) > 0 else "no"


def verdicts(arranged: Arrangement, metric: str, spec: dict[str, Any]) -> list[str]:
    """Per column, whether the best highlighted row beats every other row by more than the seed spread."""
    highlight = set(spec.get("highlight") or ())
    baselines = set(spec.get("baselines") or ())
    if not highlight:
        return []
    digits = digits_of(spec, metric)
    sign = _sign(spec, metric)
    lines = []
    for column in arranged.columns:
        cells = {row: arranged.cell(row, column, metric) for row in arranged.rows}
        finished = {row: c for row, c in cells.items() if c.mean is not None}
        ours = {row: c for row, c in finished.items() if row in highlight}
        others = {row: c for row, c in finished.items() if row not in highlight and (not baselines or row in baselines)}
        where = f"{column}: " if column else ""
        if not ours or not others:
            lines.append(f"- {where}not enough finished runs for a verdict.")
            continue
        g_row, g = min(ours.items(), key=lambda item: sign * item[1].mean)
        b_row, b = min(others.items(), key=lambda item: sign * item[1].mean)
        answer = _ahead(g, b, sign)
        lines.append(
            f"- {where}best of {', '.join(sorted(highlight))}: {g_row} {g.summary(digits)}; "
            f"best other: {b_row} {b.summary(digits)}. Better by more than the seed spread: "
            f"**{answer}**."
        )
    return lines


def equal_cost(arranged: Arrangement, metric: str, spec: dict[str, Any]) -> list[str]:
    """Per column, the best row at every cost and the cost frontier (``report.cost``, e.g. objective evaluations).

    The rows compared are the highlighted ones and the baselines when ``baselines`` names them (the rows whose
    metric is comparable), otherwise all. A row's cost is the mean of the cost metric over its runs. At each
    cost, the best row is "ahead by more than the seed spread" when its mean + std is below the next row's
    mean - std. The frontier lists, from the cheapest, every row better than all rows of lower or equal cost.
    """
    cost_metric = spec["cost"]
    digits = digits_of(spec, metric)
    sign = _sign(spec, metric)
    compared = set(spec.get("highlight") or ()) | set(spec.get("baselines") or ())
    rows = [row for row in arranged.rows if not spec.get("baselines") or row in compared]
    lines = []
    for column in arranged.columns:
        where = f"{column}: " if column else ""
        scored = []
        for row in rows:
            cell, cost = arranged.cell(row, column, metric), arranged.cell(row, column, cost_metric)
            if cell.mean is not None and cost.mean is not None:
                scored.append((cost.mean, sign * cell.mean, row, cell))
        if not scored:
            lines.append(f"- {where}no finished runs with a cost.")
            continue
        groups = []
        for cost in sorted({c for c, *_ in scored}):
            group = sorted((s for s in scored if s[0] == cost), key=lambda s: s[1])
            best = group[0][3]
            text = f"{cost:g}: {group[0][2]} {best.summary(digits)}"
            if len(group) > 1:
                text += f" (ahead of {group[1][2]} by more than the seed spread: {_ahead(best, group[1][3], sign)})"
            groups.append(text)
        frontier, record = [], math.inf
        for cost, score, row, cell in sorted(scored, key=lambda s: (s[0], s[1])):
            if score < record:
                frontier.append(f"{row} ({cost:g}, {cell.mean:.{digits}f})")
                record = score
        lines.append(f"- {where}best at each cost: " + "; ".join(groups) + ".")
        lines.append(f"  Frontier (cost, {metric}): " + ", ".join(frontier) + ".")
    return lines


def mean_curve(results: Sequence[dict[str, Any]], tag: str) -> list[tuple[int, float]]:
    """The mean over runs of a curve, on the steps that every run has."""
    curves = [dict(map(tuple, r["curves"][tag])) for r in results if tag in r.get("curves", {})]
    if not curves:
        return []
    steps = sorted(set.intersection(*(set(c) for c in curves)))
    return [(step, statistics.mean(c[step] for c in curves)) for step in steps]


def plot(arranged: Arrangement, tag: str, path: Path, log_scale: bool) -> bool:
    """One PNG per column: the mean curve of every row. ``False`` (nothing written) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    figure, axes = plt.subplots(1, len(arranged.columns), figsize=(6 * len(arranged.columns), 4.2), squeeze=False)
    drawn = False
    for axis, column in zip(axes[0], arranged.columns, strict=True):
        axis.set_prop_cycle(color=plt.cm.tab20.colors)  # up to 20 rows without repeating a colour
        curves = {row: mean_curve(arranged.runs_of(row, column), tag) for row in arranged.rows}
        for row, curve in curves.items():
            if curve:
                axis.plot([s for s, _ in curve], [v for _, v in curve], label=row)
        axis.set(xlabel="training step", ylabel=tag, title=column or tag)
        if any(curves.values()):
            drawn = True
            axis.set_yscale("log" if log_scale else "linear")
            if not log_scale:  # the range after the first tenth of training, where the curves differ
                late = [v for c in curves.values() for _, v in c[len(c) // 10 :]]
                low, high = min(late), max(late)
                axis.set_ylim(low - 0.05 * (high - low), high + 0.05 * (high - low) + 1e-12)
    if drawn:
        axes[0][-1].legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0))
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.tight_layout()
        figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)
    return drawn


def write_report(
    study: Study,
    budget: str | None = None,
    layout: Layout = Layout(),
    out: Path = Path("docs/results"),
    overrides: dict[str, str] | None = None,
    only: Sequence[str] = (),
) -> Path:
    """Write the study's markdown report (and PNGs beside it); return the markdown file's path.

    Args:
        study: The study.
        budget: Budget name (default: the study's first).
        layout: Where the result files are.
        out: Folder of the report.
        overrides: The flag overrides the runs were made with (see :func:`run_study`).
        only: Glob patterns on run ids: report on these runs only.
    """
    budget, budget_flags = study.budget(budget)
    default_budget = budget == next(iter(study.budgets))
    stem = study.name if default_budget else f"{study.name}_{budget}"
    runs = select(study.runs(budget, overrides), only)
    results = load_results(runs, budget, layout)
    arranged = Arrangement(study, runs, results, subset=bool(only))
    spec = study.report
    metric = spec.get("metric", "test/loss")
    lines = [f"# {study.title}", ""]
    if spec.get("description"):
        lines += [str(spec["description"]).strip(), ""]
    states = [r["status"] for r in results.values()]
    total = len(arranged.runs)
    lines += [
        f"Study `{study.path.as_posix()}`, budget `{budget}` ({_flags_text({**budget_flags, **(overrides or {})})}): "
        f"{len(results)} of {total} "
        f"runs have results ({states.count('done')} done, {states.count('diverged')} diverged, "
        f"{states.count('failed')} failed). Generated from `{(layout.results / study.name / budget).as_posix()}/` by "
        f"`python -m gengs_lightning.study report {study.path.as_posix()}"
        + ("" if default_budget else f" --budget {budget}")
        + "`.",
        "",
        f"## {spec.get('label', metric)} (`{metric}`)",
        "",
        *table(arranged, [metric] if arranged.column_axis else [metric, *(spec.get("also") or ())], spec),
        "",
    ]
    lines += verdicts(arranged, metric, spec)
    if spec.get("cost"):
        lines += ["", f"## At equal cost (`{spec['cost']}`)"]
        for compared in spec.get("cost_metrics") or [metric]:
            lines += ["", f"`{compared}`:", "", *equal_cost(arranged, compared, spec)]
    for extra in (spec.get("also") or ()) if arranged.column_axis else ():
        lines += ["", f"## `{extra}`", "", *table(arranged, [extra], {**spec, "paper": None}), ""]
    figures = []
    for tag, log_scale in [(spec.get("curve"), False), *((t, True) for t in spec.get("curves_extra") or ())]:
        if tag and plot(arranged, tag, out / stem / f"{tag.replace('/', '_')}.png", log_scale):
            figures.append((tag, f"{stem}/{tag.replace('/', '_')}.png"))
    if figures:
        lines += ["", "## Curves (mean over seeds)", ""]
        lines += [f"![{tag}]({file})" for tag, file in figures]
    lines += ["", "## Runs", "", *_run_table(arranged)]
    path = out / f"{stem}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines).rstrip() + "\n")
    return path


def _flags_text(flags: dict[str, str]) -> str:
    return ", ".join(f"`{flag} {value}`" for flag, value in flags.items()) or "the configs' own"


def _run_table(arranged: Arrangement) -> list[str]:
    """Every run with its status, wall time and machine."""
    lines = ["| run | status | wall time | machine | code |", "|---|---|---|---|---|"]
    for run in arranged.runs:
        result = arranged.results.get(run.id)
        if result is None:
            lines.append(f"| {run.id} | missing | | | |")
            continue
        host = result["machine"]
        device = host.get("gpu") or host.get("cpu")
        code = result.get("code") or {}
        version = code.get("commit", "?")[:10] + (" (uncommitted changes)" if code.get("dirty") else "")
        lines.append(
            f"| {run.id} | {result['status']} | {result['wall_time_s']:.0f} s | {device}, {host['threads']} thread(s), "
            f"torch {host['torch']} | {version} |"
        )
    return lines
