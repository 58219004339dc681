"""Forward+backward cost of the GenGS estimators against ``F.gumbel_softmax`` on the same shapes.

For every (batch B, latent dims D, window n) the reference is ``torch.nn.functional.gumbel_softmax``
on ``(B, D, n)`` logits, forward and backward; each GenGS estimator is timed in the same run on a
Poisson latent of the same shape (encoder output ``(B, D, raw_size)``, window of size ``n``), from
the encoder output to the gradient, with and without the KL term. Printed: median time, the ratio
to Gumbel-Softmax, elements (B * D * n) per second, and the memory held for backward (bytes of the
tensors autograd saves; on CUDA also the peak allocation). The shape (1, 1, 16) is the fixed cost of
one call. On CUDA the timer synchronises the device around every measurement
(``torch.utils.benchmark``). A second table checks that time grows linearly in n.

    python scripts/bench_estimators.py               # CPU, default shapes
    python scripts/bench_estimators.py --device cuda --min-time 1.0
    python scripts/bench_estimators.py --compile     # each estimator also under torch.compile
    GENGS_NATIVE=0 python scripts/bench_estimators.py  # the folded table by PyTorch ops, not the CPU kernel
"""

from __future__ import annotations

import argparse
from functools import partial

import torch
import torch.nn.functional as F
from torch.utils import benchmark

from gengs_lightning.bench_device import describe, parse_device, peak_memory_mib, reset_peak_memory, synchronize
from gengs_lightning.distributions import Prior, grid_native
from gengs_lightning.estimators import GenGSExplicit, GenGSImplicit, GenGSNonparametric, GenGSStraightThrough

SHAPES = [(1, 1, 16), (128, 20, 16), (128, 50, 32), (128, 20, 64), (128, 200, 32), (512, 50, 100), (32, 10, 512)]
ESTIMATORS = {
    "GenGSExplicit": lambda n: GenGSExplicit(window=n, tau=0.5),
    "GenGSImplicit": lambda n: GenGSImplicit(window=n, tau=0.5),
    "GenGSStraightThrough": lambda n: GenGSStraightThrough(window=n, tau=0.5),
    "GenGSNonparametric": lambda n: GenGSNonparametric(eps=1e-6, max_size=n, tau=0.5),
}


def gumbel_softmax_step(logits: torch.Tensor, grad: torch.Tensor) -> None:
    """Reference: relaxed one-hot sample of ``(B, D, n)`` logits, forward and backward."""
    F.gumbel_softmax(logits, tau=0.5).backward(grad)


def estimator_step(estimator, raw: torch.Tensor, prior: Prior, weight: torch.Tensor, kl: bool) -> None:
    """One estimator call from encoder output to gradient with a linear objective (``estimator``: any callable)."""
    out = estimator(raw, lambda z: (z * weight).sum(-1), prior, kl=kl)
    out.surrogate.backward()


def saved_bytes(fn) -> int:
    """Bytes of the tensors autograd saves for backward while ``fn`` runs its forward pass."""
    total = 0

    def pack(tensor):
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        fn()
    return total


def peak_cuda_bytes(fn, device: torch.device) -> int:
    """Peak CUDA allocation during one call (0 on CPU)."""
    if device.type != "cuda":
        return 0
    synchronize(device)
    reset_peak_memory(device)
    fn()
    synchronize(device)
    return int(peak_memory_mib(device) * 2**20)


def best_median(candidates: dict, min_time: float, rounds: int) -> dict[str, float]:
    """Median seconds per call of each candidate, best of ``rounds`` interleaved rounds (less noise)."""
    times = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, fn in candidates.items():
            timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
            times[name].append(timer.blocked_autorange(min_run_time=min_time).median)
    return {name: min(values) for name, values in times.items()}


def bench_shape(
    batch: int,
    dims: int,
    n: int,
    device: torch.device,
    min_time: float,
    rounds: int = 3,
    names=None,
    compile: bool = False,
) -> list[tuple]:
    """Time the reference and the estimators on one shape (with ``compile``, also ``torch.compile``d); table rows."""
    torch.manual_seed(0)
    prior = Prior("poisson", {"rate": n / 4}).to(device)
    logits = torch.randn(batch, dims, n, device=device, requires_grad=True)
    grad = torch.randn(batch, dims, n, device=device)
    weight = torch.randn(dims, device=device)
    candidates = {"F.gumbel_softmax": lambda: gumbel_softmax_step(logits, grad)}
    for name in names or ESTIMATORS:
        estimator = ESTIMATORS[name](n).to(device)
        raw = torch.randn(batch, dims, estimator.raw_size(prior), device=device).requires_grad_()
        for kl in (False, True):
            label = name + (" +KL" if kl else "")
            candidates[label] = partial(estimator_step, estimator, raw, prior, weight, kl)
            if compile:
                compiled = partial(estimator_step, torch.compile(estimator.forward), raw, prior, weight, kl)
                compiled(), compiled()  # compile (and recompile for the backward) before timing
                candidates[label + " compiled"] = compiled
    times = best_median(candidates, min_time, rounds)
    reference, elements = times["F.gumbel_softmax"], batch * dims * n
    return [
        (
            name,
            (batch, dims, n),
            seconds,
            seconds / reference,
            elements / seconds,
            saved_bytes(fn),
            peak_cuda_bytes(fn, device),
        )
        for (name, fn), seconds in zip(candidates.items(), times.values(), strict=True)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--min-time", type=float, default=0.4, help="seconds of timing per measurement")
    parser.add_argument("--compile", action="store_true", help="also time every estimator under torch.compile")
    args = parser.parse_args()
    device = parse_device(args.device)
    print(f"torch {torch.__version__}, {describe(device)}")
    route = "native CPU kernel" if grid_native.usable(torch.zeros((), device=device)) else "PyTorch operations"
    print(f"folded table of the explicit estimators: {route}")
    header = ("estimator", "shape (B,D,n)", "time ms", "x GS", "Melem/s", "saved MB", "peak MB")
    print("{:<35}{:>18}{:>10}{:>8}{:>10}{:>10}{:>9}".format(*header))
    for shape in SHAPES:
        rows = bench_shape(*shape, device, args.min_time, compile=args.compile)
        for label, shp, seconds, ratio, rate, saved, peak in rows:
            print(
                f"{label:<35}{str(shp):>18}{seconds * 1e3:>10.3f}{ratio:>8.2f}{rate / 1e6:>10.1f}"
                f"{saved / 2**20:>10.2f}{peak / 2**20:>9.2f}"
            )
        print()
    print("Linearity in n (B=128, D=50): time at n / time at n=32, against n / 32")
    base = {}
    for n in (32, 64, 128, 256, 512):
        rows = bench_shape(128, 50, n, device, args.min_time, names=["GenGSExplicit", "GenGSImplicit"])
        cells = []
        for label, _, seconds, *_ in rows:
            if label.endswith("+KL"):
                continue
            base.setdefault(label, seconds)
            cells.append(f"{label} {seconds * 1e3:7.2f} ms (x{seconds / base[label]:5.2f})")
        print(f"  n={n:<4} (x{n / 32:4.1f})  " + "   ".join(cells))


if __name__ == "__main__":
    main()
