"""Whether a study runs faster two runs at a time with one thread each, or one at a time with two threads.

Times the same CLI run (``python -m gengs_lightning fit <args>``) twice in each mode on an otherwise idle
machine: one after the other with ``OMP_NUM_THREADS=<cores>``, and both at once with
``OMP_NUM_THREADS=<cores / 2>``; prints the wall time of each mode and the throughput ratio. The answer
depends on the model: small steps (the toy task) are Python-bound and gain nothing from a second
thread, large matrix products (NVPDEF's 1995 x 500 layers) do. Pick the study runner's ``--jobs`` and
``--threads`` from it.

    python scripts/bench_parallel_runs.py -- --config configs/toy/poisson.yaml --trainer.max_steps 300
    python scripts/bench_parallel_runs.py -- --config configs/nvpdef/20news.yaml \
        --data.data_dir ../shared/data/20news/prodlda_vocab1995 --trainer.max_epochs 1 --trainer.limit_train_batches 60
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time


def run(args: list[str], threads: int, parallel: int) -> float:
    """Wall seconds for ``parallel`` copies of the run started at once with ``threads`` threads each."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        processes = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gengs_lightning",
                    "fit",
                    *args,
                    f"--trainer.logger.init_args.save_dir={folder}/{i}",
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for i in range(parallel)
        ]
        codes = [process.wait() for process in processes]
        seconds = time.perf_counter() - start
    if any(codes):
        raise SystemExit(f"a run failed (exit codes {codes}); check the arguments: {' '.join(args)}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 2, help="cores to share (default: all)")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="after --: the fit arguments of one run")
    options = parser.parse_args()
    args = options.args[1:] if options.args[:1] == ["--"] else options.args
    if not args:
        raise SystemExit("give the run's fit arguments after --, e.g. -- --config configs/toy/poisson.yaml")
    args += ["--progress_bar_refresh_rate=0", "--trainer.enable_model_summary=false", "--test_after_fit=false"]
    half = max(1, options.cores // 2)
    sequential = run(args, options.cores, 1) + run(args, options.cores, 1)
    parallel = run(args, half, 2)
    print(f"two runs one after the other, {options.cores} threads each: {sequential:.1f} s")
    print(f"two runs at once, {half} thread(s) each:            {parallel:.1f} s")
    faster = "at once" if parallel < sequential else "one after the other"
    print(f"throughput of two at once / one after the other: {sequential / parallel:.2f}x ({faster} is faster)")


if __name__ == "__main__":
    main()
