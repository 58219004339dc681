"""Compare estimators on the paper's toy task (Figure 3) through the study runner, and their cost on the MNIST VAE.

Part 1 runs (a subset of) ``studies/toy.yaml``, with every other registered estimator added
(:func:`with_registered_estimators`), with :mod:`gengs_lightning.study` into ``<out>/results``
and writes its report, ``<out>/toy.md`` with the curves beside it: the final exact loss, the gradient
variance (mean log10 over the first fifth of the run and over the whole run) per estimator and family,
``n/a`` where an estimator does not apply and ``diverged`` where a run stopped on a non-finite loss. The
committed study (``results/toy``, ``docs/results/toy.md``) is the same mechanism with every run.

Part 2, cost: training steps per second of the MNIST VAE (784-512-256-20, Poisson(2), batch 100, random
binary images of MNIST's shape) with each estimator, relative to GenGSExplicit, measured in one process;
appended to the report as ``<out>/comparison.md``.

    python scripts/compare_estimators.py --steps 500 --out comparison
    python scripts/compare_estimators.py --estimators GenGSExplicit RF --families poisson --steps 100 --seeds 0
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import statistics
import time
from pathlib import Path

import torch

from gengs_lightning.distributions import Prior
from gengs_lightning.estimators.registry import class_path, registered
from gengs_lightning.models import VAE
from gengs_lightning.study import Layout, Study, run_study, write_report
from gengs_lightning.study.spec import Setting

STUDY = Path(__file__).resolve().parents[1] / "studies" / "toy.yaml"
ESTIMATOR_FLAG = "--model.init_args.estimator"


def with_registered_estimators(study: Study) -> Study:
    """The study with a setting for every registered estimator that none of its settings selects.

    The study's settings stay as they are (their names and arguments are those of the committed results);
    an estimator registered elsewhere (:mod:`gengs_lightning.estimators.registry`) is added under its class
    name, by class path, with its :attr:`~gengs_lightning.estimators.Estimator.min_samples` samples.
    """
    settings = study.axes["estimator"]
    selected = {setting.flags.get(ESTIMATOR_FLAG) for setting in settings}
    added = []
    for cls in registered():
        path = class_path(cls)
        if path not in selected:
            flags = {ESTIMATOR_FLAG: path}
            if cls.min_samples > 1:
                flags[f"{ESTIMATOR_FLAG}.init_args.num_samples"] = str(cls.min_samples)
            added.append(Setting("estimator", cls.__name__, flags))
    return dataclasses.replace(study, axes={**study.axes, "estimator": [*settings, *added]})


def estimator_of(study: Study, name: str) -> torch.nn.Module:
    """The estimator a study setting selects, built with the arguments its flags give (for the cost table)."""
    (setting,) = [s for s in study.axes["estimator"] if s.name == name]
    module, _, cls = setting.flags[ESTIMATOR_FLAG].rpartition(".")
    prefix = f"{ESTIMATOR_FLAG}.init_args."
    kwargs = {k[len(prefix) :]: _value(v) for k, v in setting.flags.items() if k.startswith(prefix)}
    estimator_class = getattr(importlib.import_module(module), cls)
    if "window" in estimator_class.__init__.__code__.co_varnames:
        kwargs.setdefault("window", 16)
    return estimator_class(**kwargs)


def _value(text: str) -> object:
    """A flag's value as the CLI reads it: a JSON number, list or boolean, else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def vae_step_seconds(estimator: torch.nn.Module, steps: int) -> float:
    """Median seconds per training step of the MNIST-shaped VAE with one estimator (plain loop)."""
    model = VAE(estimator, Prior("poisson", {"rate": 2.0})).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    images = torch.bernoulli(torch.full((100, 784), 0.13))
    times = []
    for _ in range(steps + 3):
        start = time.perf_counter()
        optimizer.zero_grad()
        model.estimate(images).surrogate.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times[3:])


def main() -> None:
    study = with_registered_estimators(Study.load(STUDY))
    families = [s.name for s in study.axes["family"]]
    estimators = [s.name for s in study.axes["estimator"]]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", nargs="+", default=families, choices=families)
    parser.add_argument("--estimators", nargs="+", default=estimators, choices=estimators)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--steps", type=int, default=1000, help="toy training steps per run")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once")
    parser.add_argument("--vae-steps", type=int, default=20, help="timed VAE steps per estimator (0: skip)")
    parser.add_argument("--out", type=Path, default=Path("comparison"))
    args = parser.parse_args()
    out = args.out.resolve()
    layout = Layout(out / "results", out / "runs")
    overrides = {"--trainer.max_steps": str(args.steps), "--model.init_args.grad_every": str(max(1, args.steps // 20))}
    only = [f"{f}/{e}/seed{s}" for f in args.families for e in args.estimators for s in args.seeds]
    run_study(study, None, layout, jobs=args.jobs, only=only, overrides=overrides)
    report = write_report(study, None, layout, out, overrides=overrides, only=only)
    lines = [report.read_text().rstrip(), ""]
    if args.vae_steps:
        cost = {name: vae_step_seconds(estimator_of(study, name), args.vae_steps) for name in args.estimators}
        reference = cost.get("GenGSExplicit") or next(iter(cost.values()))
        lines += ["## Cost on the MNIST VAE", "", "Median time per training step relative to GenGSExplicit.", ""]
        lines += ["| estimator | VAE step vs GenGSExplicit |", "|---|---|"]
        lines += [f"| {name} | {seconds / reference:.2f}x |" for name, seconds in cost.items()]
    (out / "comparison.md").write_text("\n".join(lines) + "\n")
    print((out / "comparison.md").read_text())


if __name__ == "__main__":
    main()
