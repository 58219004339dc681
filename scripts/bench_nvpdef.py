r"""Training throughput (documents per second) and peak memory of the NVPDEF topic model.

The model, data and optimizer come from a config (default ``configs/nvpdef/20news.yaml``: 1-stacked,
50 topics, GenGSExplicit, batch 64) through the package's CLI, exactly as ``fit`` builds them. Each
round runs, in fresh processes, ``Trainer.fit`` for ``--steps`` training steps (TensorBoard logger,
no validation) and the same model in a plain PyTorch loop (estimate, backward, optimizer step) on the
same DataLoader; rounds alternate to share machine noise. Reported per mode: the median over rounds of
the steady-state documents per second (from the second batch to the last), the ratio Lightning /
plain, and the process's peak resident memory (CPU) or peak allocated GPU memory. With
``--device cuda`` both modes run on the GPU and the clock is read after synchronising it.

    python scripts/bench_nvpdef.py --data-dir ../shared/data/20news/prodlda_vocab1995
    python scripts/bench_nvpdef.py --data-dir ../shared/data/20news/prodlda_vocab1995 --device cuda
    python scripts/bench_nvpdef.py --data-dir ../shared/data/20news/prodlda_vocab1995 --steps 50 --config \
        configs/nvpdef/20news_stacked.yaml
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch

from gengs_lightning.bench_device import describe, parse_device, peak_memory_mib, synchronize
from gengs_lightning.cli import main as cli_main

REPO = Path(__file__).resolve().parents[1]


class _BatchClock(pl.Callback):
    """Records the time at the start of every training batch, and stops after ``steps`` of them."""

    def __init__(self, device: torch.device):
        self.device = device
        self.times: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        synchronize(self.device)
        self.times.append(time.perf_counter())


def build(config: str, data_dir: str, log_dir: str, steps: int, callbacks: list[pl.Callback], device: torch.device):
    """The model, the DataModule and a Trainer as the CLI builds them from ``config``, on ``device``."""
    cli = cli_main(
        [
            "--config",
            config,
            "--trainer.accelerator=" + ("gpu" if device.type == "cuda" else "cpu"),
            f"--trainer.devices=[{device.index or 0}]" if device.type == "cuda" else "--trainer.devices=1",
            f"--data.data_dir={data_dir}",
            f"--trainer.logger.init_args.save_dir={log_dir}",
            f"--trainer.max_steps={steps + 1}",
            "--trainer.limit_val_batches=0",
            "--trainer.num_sanity_val_steps=0",
            "--trainer.enable_checkpointing=false",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
            "--trainer.callbacks=null",
        ],
        run=False,
    )
    for callback in callbacks:
        cli.trainer.callbacks.append(callback)
    return cli.model, cli.datamodule, cli.trainer


def run_once(mode: str, config: str, data_dir: str, steps: int, device: torch.device) -> dict[str, float]:
    """One measurement in this process: documents per second in steady state and peak memory."""
    torch.manual_seed(0)
    clock = _BatchClock(device)
    with tempfile.TemporaryDirectory() as log_dir:
        model, data, trainer = build(config, data_dir, log_dir, steps, [clock], device)
        if mode == "lightning":
            trainer.fit(model, datamodule=data)
            times = clock.times
        else:
            data.setup("fit")
            model = model.to(device).train()
            optimizer = model.configure_optimizers()
            optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
            times = []
            for batch in data.train_dataloader():
                if len(times) == steps + 1:
                    break
                synchronize(device)
                times.append(time.perf_counter())
                optimizer.zero_grad()
                model.estimate(batch.to(device)).surrogate.backward()
                optimizer.step()
    seconds = (times[-1] - times[1]) / (len(times) - 2)
    return {"docs_per_s": data.batch_size / seconds, "peak_mib": peak_memory_mib(device)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, help="folder with train.feat, test.feat and vocab.new")
    parser.add_argument("--config", default=str(REPO / "configs" / "nvpdef" / "20news.yaml"))
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--mode", choices=["lightning", "plain"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = parse_device(args.device)
    if args.mode:
        print(json.dumps(run_once(args.mode, args.config, args.data_dir, args.steps, device)))
        return
    results: dict[str, list[dict[str, float]]] = {"plain": [], "lightning": []}
    for _ in range(args.rounds):
        for mode in results:
            command = [sys.executable, __file__, f"--mode={mode}", f"--data-dir={args.data_dir}"]
            command += [f"--config={args.config}", f"--steps={args.steps}", f"--device={args.device}"]
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            results[mode].append(json.loads(output.strip().splitlines()[-1]))
    setup = f"torch {torch.__version__}, {describe(device)}, {args.steps} steps, {args.rounds} rounds"
    print(f"{Path(args.config).name}: {setup}")
    plain = statistics.median(r["docs_per_s"] for r in results["plain"])
    for mode, runs in results.items():
        rate = statistics.median(r["docs_per_s"] for r in runs)
        memory = max(r["peak_mib"] for r in runs)
        print(f"{mode:<10}: {rate:8.0f} documents/s ({rate / plain:.2f}x plain), peak memory {memory:.0f} MiB")


if __name__ == "__main__":
    main()
