"""Train the VAE of the paper's Table 1 with several estimators and seeds; write a table and curves.

Every run goes through the real command line (``gengs_lightning.cli.main``) with the config
``configs/vae/<dataset>_<prior>.yaml``, the estimator swapped by a flag, ``--test_after_fit`` on, and
its own log directory. The results are written to ``<out>/results.md`` (test negative ELBO and
``test/nll_iw``, mean +- standard deviation over seeds) and ``<out>/curves.png`` (validation negative
ELBO per epoch, mean over seeds; needs matplotlib).

    python scripts/reproduce_vae.py --dataset digits --prior poisson2 --epochs 20 --seeds 0 1 2
    python scripts/reproduce_vae.py --dataset mnist --prior poisson2 --data-dir ../shared/data/mnist --epochs 100
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from gengs_lightning.cli import main as cli_main

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "vae"
DEFAULT_ESTIMATORS = ["GenGSExplicit", "GenGSImplicit", "GenGSStraightThrough", "GenGSNonparametric"]


def config_path(dataset: str, prior: str) -> Path:
    """The config of a dataset and prior, or an error listing the available ones."""
    path = CONFIGS / f"{dataset}_{prior}.yaml"
    if not path.exists():
        available = ", ".join(sorted(p.stem for p in CONFIGS.glob("*.yaml")))
        raise SystemExit(f"no config {path.name}; available: {available}")
    return path


def run(config: Path, estimator: str, seed: int, epochs: int, out: Path, data_dir: str | None) -> dict:
    """Fit and test one VAE; return its test metrics and validation curve."""
    name = f"{estimator}_seed{seed}"
    args = [
        "fit",
        "--config",
        str(config),
        f"--model.estimator=gengs_lightning.estimators.{estimator}",
        f"--seed_everything={seed}",
        f"--trainer.max_epochs={epochs}",
        f"--trainer.logger.init_args.save_dir={out}",
        f"--trainer.logger.init_args.name={name}",
        "--trainer.enable_progress_bar=false",
        "--test_after_fit=true",
    ]
    if data_dir:
        args.append(f"--data.data_dir={data_dir}")
    cli = cli_main(args)
    metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items() if k.startswith("test/")}
    return {"estimator": estimator, "seed": seed, "metrics": metrics, "curve": validation_curve(out / name)}


def validation_curve(run_dir: Path) -> list[tuple[int, float]]:
    """``(step, val/loss)`` pairs from a run's TensorBoard events."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = {p.parent for p in run_dir.rglob("events.out.tfevents.*")}
    accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
    accumulator.Reload()
    return [(e.step, e.value) for e in accumulator.Scalars("val/loss")]


def summary(values: list[float]) -> str:
    """``mean +- std`` over seeds (std omitted for one seed)."""
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} +- {statistics.stdev(values):.2f}"


def write_table(results: list[dict], path: Path, title: str) -> None:
    """Markdown table: one row per estimator, test -ELBO and test/nll_iw over seeds."""
    lines = [f"# {title}", "", "| estimator | seeds | test -ELBO | test -log p(x) (IW) |", "|---|---|---|---|"]
    for estimator in dict.fromkeys(r["estimator"] for r in results):
        runs = [r for r in results if r["estimator"] == estimator]
        elbo = summary([r["metrics"]["test/loss"] for r in runs])
        nll = summary([r["metrics"]["test/nll_iw"] for r in runs])
        lines.append(f"| {estimator} | {len(runs)} | {elbo} | {nll} |")
    path.write_text("\n".join(lines) + "\n")


def plot_curves(results: list[dict], path: Path, title: str) -> bool:
    """Validation -ELBO against step, mean over seeds per estimator; ``False`` without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no curves.png (pip install matplotlib)")
        return False
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for estimator in dict.fromkeys(r["estimator"] for r in results):
        curves = [r["curve"] for r in results if r["estimator"] == estimator]
        length = min(len(c) for c in curves)
        steps = [step for step, _ in curves[0][:length]]
        means = [statistics.mean(c[i][1] for c in curves) for i in range(length)]
        axis.plot(steps, means, label=estimator)
    axis.set(xlabel="training step", ylabel="validation negative ELBO", title=title)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="digits", help="mnist, omniglot or digits")
    parser.add_argument("--prior", default="poisson2", help="poisson2, poisson3, geometric025, ... (config suffix)")
    parser.add_argument("--estimators", nargs="+", default=DEFAULT_ESTIMATORS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--data-dir", default=None, help="folder with the dataset's files (not for digits)")
    parser.add_argument("--out", default="reproduce_vae", help="output folder")
    args = parser.parse_args()
    config = config_path(args.dataset, args.prior)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    results = [
        run(config, estimator, seed, args.epochs, out, args.data_dir)
        for estimator in args.estimators
        for seed in args.seeds
    ]
    title = f"VAE {args.dataset} {args.prior}, {args.epochs} epochs"
    write_table(results, out / "results.md", title)
    plot_curves(results, out / "curves.png", title)
    print((out / "results.md").read_text())


if __name__ == "__main__":
    main()
