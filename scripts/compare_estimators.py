"""Compare every estimator on the paper's toy task (Figure 3) and its cost on the MNIST VAE.

Part 1, toy task (NeurIPS Section 6.1, Figure 3): for each family (Poisson(20), Binomial(20, .3),
Multinomial(3, [.7, .2, .1]), NegativeBinomial(3, .4)) and each estimator, train ``ToyTask`` through the
command line with ``configs/toy/<family>.yaml`` and the estimator swapped by a flag; read
``train/exact_loss`` and ``train/grad_var`` from the TensorBoard events. Writes ``toy_loss.png`` and
``toy_variance.png`` (log scale, one panel per family) and the mean log10 gradient variance per run.

Part 2, cost: training steps per second of the MNIST VAE (784-512-256-20, Poisson(2), batch 100, random
binary images of MNIST's shape) with each estimator, relative to GenGSExplicit, measured in one process.

Everything lands in ``<out>/comparison.md``.

    python scripts/compare_estimators.py --steps 500 --out comparison
    python scripts/compare_estimators.py --estimators GenGSExplicit Reinforce --families poisson --steps 100
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path

import torch

from gengs_lightning.cli import main as cli_main
from gengs_lightning.distributions import Prior
from gengs_lightning.models import VAE

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "toy"
FAMILIES = ["poisson", "binomial", "multinomial", "negative_binomial"]
#: Estimator class name -> extra init arguments (single-sample unless the estimator needs more, as in the paper).
ESTIMATORS: dict[str, dict[str, object]] = {
    "GenGSExplicit": {},
    "GenGSImplicit": {},
    "GenGSStraightThrough": {},
    "GenGSNonparametric": {"eps": 1e-6},
    "GenGSRB": {},
    "GumbelSoftmax": {},
    "IGR": {"variant": "I"},
    "Reinforce": {},
    "ReinforceLOO": {"num_samples": 2},
    "NVIL": {},
    "MuProp": {},
    "VIMCO": {"num_samples": 2},
    "REBAR": {},
    "RELAX": {},
    "StoRB": {},
    "UnOrd": {"num_samples": 2},
}


def estimator_flags(name: str) -> list[str]:
    """CLI flags that select an estimator and its extra arguments."""
    flags = [f"--model.estimator=gengs_lightning.estimators.{name}"]
    flags += [f"--model.estimator.init_args.{key}={value}" for key, value in ESTIMATORS[name].items()]
    return flags


def unsupported(family: str, estimator: str) -> str | None:
    """Why ``estimator`` cannot run the toy task's ``family`` (its own error on one tiny batch), or ``None``."""
    import yaml

    import gengs_lightning.estimators as estimators

    target = yaml.safe_load((CONFIGS / f"{family}.yaml").read_text())["model"]["init_args"]["target"]
    prior = Prior(target["family"], target["params"])
    instance = getattr(estimators, estimator)(**ESTIMATORS[estimator])
    try:
        params = instance.raw_like(prior).expand(1, 1, instance.raw_size(prior))
        instance(params, lambda z: z.flatten(2).sum(-1), prior)
    except ValueError as error:
        return str(error)
    return None


def toy_run(family: str, estimator: str, steps: int, out: Path) -> dict[str, list[tuple[int, float]]]:
    """Train the toy task once; return its exact-loss and gradient-variance series.

    A run whose loss turns non-finite stops with the model's ``FloatingPointError``; it is reported
    (``"diverged"``: the message) with the series logged up to then, and the comparison goes on.
    """
    name = f"{family}_{estimator}"
    reason = unsupported(family, estimator)
    if reason:
        print(f"{family} / {estimator} skipped: {reason}")
        return {"train/exact_loss": [], "train/grad_var": [], "unsupported": reason}
    try:
        _toy_fit(family, estimator, steps, out, name)
    except FloatingPointError as error:
        print(f"{family} / {estimator} diverged: {error}")
        return {**read_series(out / name, ["train/exact_loss", "train/grad_var"]), "diverged": str(error)}
    return read_series(out / name, ["train/exact_loss", "train/grad_var"])


def _toy_fit(family: str, estimator: str, steps: int, out: Path, name: str) -> None:
    cli_main(
        [
            "fit",
            "--config",
            str(CONFIGS / f"{family}.yaml"),
            *estimator_flags(estimator),
            f"--trainer.max_steps={steps}",
            f"--trainer.logger.init_args.save_dir={out}",
            f"--trainer.logger.init_args.name={name}",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
            "--trainer.enable_checkpointing=false",
            "--trainer.limit_val_batches=0",
            f"--model.init_args.grad_every={max(1, steps // 20)}",
        ]
    )


def read_series(run_dir: Path, tags: list[str]) -> dict[str, list[tuple[int, float]]]:
    """Scalars of one run's TensorBoard events."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = {p.parent for p in run_dir.rglob("events.out.tfevents.*")}
    accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
    accumulator.Reload()
    present = set(accumulator.Tags()["scalars"])
    return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] if tag in present else [] for tag in tags}


def vae_step_seconds(estimator: str, steps: int) -> float:
    """Median seconds per training step of the MNIST-shaped VAE with one estimator (plain loop)."""
    import gengs_lightning.estimators as estimators

    prior = Prior("poisson", {"rate": 2.0})
    options = {"window": 16} if "window" in _init_arguments(estimator) else {}
    model = VAE(getattr(estimators, estimator)(**options, **ESTIMATORS[estimator]), prior).train()
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


def _init_arguments(estimator: str) -> set[str]:
    import inspect

    import gengs_lightning.estimators as estimators

    return set(inspect.signature(getattr(estimators, estimator).__init__).parameters)


def _cell(run: dict, early: int) -> str:
    """``early / all; loss`` for one run: mean log10 gradient variance over the first steps and the run."""
    if "unsupported" in run:
        return "n/a"
    values = [(step, v) for step, v in run["train/grad_var"] if v > 0]
    if not values:
        return "-"
    first = [math.log10(v) for step, v in values if step < early] or [math.log10(values[0][1])]
    whole = statistics.mean(math.log10(v) for _, v in values)
    loss = run["train/exact_loss"][-1][1] if run["train/exact_loss"] else math.nan
    cell = f"{statistics.mean(first):.2f} / {whole:.2f}; {loss:.2f}"
    return f"{cell} (diverged)" if "diverged" in run else cell


def plot(results: dict, tag: str, path: Path, ylabel: str) -> None:
    """One log-scale panel per family, one line per estimator."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    families = list(dict.fromkeys(family for family, _ in results))
    figure, axes = plt.subplots(1, len(families), figsize=(5 * len(families), 4), squeeze=False)
    for axis, family in zip(axes[0], families, strict=True):
        for (run_family, estimator), series in results.items():
            if run_family == family and series[tag]:
                steps, values = zip(*series[tag], strict=True)
                axis.plot(steps, [max(v, 1e-12) for v in values], label=estimator)
        axis.set(yscale="log", title=family, xlabel="step", ylabel=ylabel)
    axes[0][-1].legend(fontsize=7, loc="upper right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", nargs="+", default=FAMILIES)
    parser.add_argument("--estimators", nargs="+", default=list(ESTIMATORS))
    parser.add_argument("--steps", type=int, default=500, help="toy training steps per run")
    parser.add_argument("--vae-steps", type=int, default=20, help="timed VAE steps per estimator (0: skip)")
    parser.add_argument("--out", default="comparison")
    args = parser.parse_args()
    unknown = sorted(set(args.estimators) - set(ESTIMATORS))
    if unknown:
        raise SystemExit(f"unknown estimators {unknown}; accepted: {', '.join(ESTIMATORS)}")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    results = {(f, e): toy_run(f, e, args.steps, out / "runs") for f in args.families for e in args.estimators}
    cost = {e: vae_step_seconds(e, args.vae_steps) for e in args.estimators} if args.vae_steps else {}
    reference = cost.get("GenGSExplicit")
    early = max(1, args.steps // 5)
    header = (
        "| estimator | "
        + " | ".join(f"{f}: log10 grad var, first {early} / all steps; final exact loss" for f in args.families)
        + " | VAE step vs GenGSExplicit |"
    )
    lines = [
        "# Estimator comparison",
        "",
        f"Toy task, {args.steps} steps per run. Per family: the mean of log10 train/grad_var over the first "
        f"{early} steps (the toy configs' temperature is still >= 0.6 there) and over the whole run (lower is "
        "better; a diverged run: its steps before the non-finite loss), and the final train/exact_loss; n/a: "
        "the estimator does not apply to the family. The variances are of the gradient in each estimator's "
        "own encoder output: the family's parameter for most, the window's logits for GenGSImplicit, "
        "GumbelSoftmax and IGR (not comparable with the others); NVIL's is of its normalised estimate. "
        "VAE: median time per training step relative to GenGSExplicit.",
        "",
        header,
        "|" + "---|" * (len(args.families) + 2),
    ]
    for estimator in args.estimators:
        cells = [_cell(results[(family, estimator)], early) for family in args.families]
        ratio = f"{cost[estimator] / reference:.2f}x" if reference else "-"
        lines.append(f"| {estimator} | " + " | ".join(cells) + f" | {ratio} |")
    (out / "comparison.md").write_text("\n".join(lines) + "\n")
    plot(results, "train/exact_loss", out / "toy_loss.png", "exact loss")
    plot(results, "train/grad_var", out / "toy_variance.png", "gradient variance")
    print((out / "comparison.md").read_text())


if __name__ == "__main__":
    main()
