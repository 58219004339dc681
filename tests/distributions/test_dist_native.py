"""The native CPU kernel of the folded table against the eager PyTorch route, and its fallback.

Both routes compute the same formulas in the same order (``native/folded_table.cpp`` mirrors
``grid._eager_table``), except that PyTorch's reductions sum in another order than the kernel's
sequential loops. Tolerances, derived from that:

* the grid ``eta k + h - A`` and so the table's interior: identical bits (the same three rounded
  operations per entry, no fused multiply-add);
* an edge, the log of a sum of at most ``m = high + 1 + SERIES_TERMS`` terms: each order of summation
  is within ``m`` ulps of the exact sum, so the two logs differ by at most ``2 m`` ulps (absolute, in
  log space), plus the rounding of adding the log to the term's magnitude (4 ulps of ``|log pi|``).
  Where the upper edge is the complement ``1 - P(X < b)`` (a tail of at least ``SERIES_THRESHOLD``),
  the head's absolute error is divided by the tail: the bound is multiplied by
  ``1 + P(X < b) / P(X >= b)``; rows at the switch between two routes are within the same bound, as
  each route is accurate to it;
* an edge's conditional mean (the gradient of its log-mass): the same relative bound, as
  ``E[X | X >= b] = (E X - P(X < b) E[X | X < b]) / P(X >= b)`` cancels by the same factor;
* the gradient of ``sum(g * table)``: the sum over the ``n`` entries in another order, ``2 n`` ulps of
  ``sum |g_j E_j|``, plus the means' own bound.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from distributions.dist_testing import EPS32, EPS64

from gengs_lightning.distributions import (
    TruncatedBinomial,
    TruncatedGeometric,
    TruncatedNegativeBinomial,
    TruncatedPoisson,
    grid_native,
)
from gengs_lightning.distributions.grid import SERIES_TERMS, SERIES_THRESHOLD, folded_table

WINDOWS = [(0, 1), (0, 15), (0, 63), (3, 18), (10, 41), (30, 40), (0, 300), (200, 260)]
FAMILIES = {
    "poisson": (TruncatedPoisson, {"rate": torch.logspace(-6, 4, 81, dtype=torch.float64)}),
    "geometric": (TruncatedGeometric, {"probs": torch.linspace(1e-4, 1 - 1e-4, 41, dtype=torch.float64)}),
    "negbin": (
        TruncatedNegativeBinomial,
        {
            "total_count": torch.tensor([0.3, 3.5, 40.0], dtype=torch.float64).repeat_interleave(21),
            "probs": torch.linspace(1e-4, 0.999, 21, dtype=torch.float64).repeat(3),
        },
    ),
    "binomial": (TruncatedBinomial, {"total_count": 400, "probs": torch.linspace(1e-4, 1 - 1e-4, 41)}),
}

needs_kernel = pytest.mark.skipif(
    not grid_native.usable(torch.zeros(())), reason="the native kernel could not be built here (no C++ compiler)"
)


def table_inputs(family: str, window: tuple[int, int], dtype=torch.float64):
    """``folded_table``'s arguments for a family's parameter sweep, as ``TruncatedCount`` builds them."""
    cls, params = FAMILIES[family]
    params = {name: p.to(dtype) if torch.is_tensor(p) else p for name, p in params.items()}
    member = cls(**params, window=window, validate_args=False)
    params64 = {name: p.double() if torch.is_tensor(p) else p for name, p in member.params.items()}
    eta, log_norm, mean = (x.expand(member.batch_shape) for x in member.natural(**params64))
    return eta, log_norm, mean, member.recurrence(**params64), member._base_measure


def routes(monkeypatch):
    """Yields ``True`` with ``folded_table`` taking the kernel's route, then ``False`` with it taking PyTorch's."""
    for native in (True, False):
        monkeypatch.setattr(grid_native, "usable", lambda t, native=native: native)
        yield native


def both_routes(monkeypatch, family: str, window: tuple[int, int], grad_at: int | None = None, dtype=torch.float64):
    """The table (and with ``grad_at``, ``d table[..., grad_at] / d eta``) by the kernel, then by PyTorch."""
    results = []
    for _ in routes(monkeypatch):
        eta, log_norm, mean, recurrence, base_measure = table_inputs(family, window)
        eta = eta.clone().requires_grad_()
        table, outside = folded_table(eta, log_norm, mean, recurrence, base_measure, *window, dtype)
        if grad_at is None:
            results.append((table.detach(), outside))
        else:
            (grad,) = torch.autograd.grad(table[..., grad_at].sum(), eta)
            results.append((table.detach(), grad))
    return results


def edge_tolerance(table: torch.Tensor, window: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Absolute log-space bounds of the lower and upper edges (module docstring), per row."""
    terms = window[1] + 1 + SERIES_TERMS
    log_tail = table[..., -1]
    log_head = torch.logsumexp(table[..., :-1], -1)
    complement = log_tail >= torch.log(torch.tensor(SERIES_THRESHOLD, dtype=torch.float64))
    factor = torch.where(complement, 1 + (log_head - log_tail).exp(), torch.ones_like(log_tail))
    lower = 2 * terms * EPS64 + 4 * EPS64 * table[..., 0].abs()
    upper = 2 * terms * EPS64 * factor + 4 * EPS64 * log_tail.abs()
    return lower, upper


@needs_kernel
@pytest.mark.parametrize("window", WINDOWS, ids=str)
@pytest.mark.parametrize("family", FAMILIES)
def test_the_kernels_table_is_the_eager_one(monkeypatch, family, window):
    (native, native_outside), (eager, eager_outside) = both_routes(monkeypatch, family, window)
    assert native.dtype == eager.dtype == torch.float64
    assert torch.equal(native[..., 1:-1], eager[..., 1:-1])
    lower, upper = edge_tolerance(eager, window)
    assert torch.equal(native.isfinite(), eager.isfinite())
    if window[0] == 0:  # the lower edge is the grid's log p_0 itself
        assert torch.equal(native[..., 0], eager[..., 0])
    assert ((native[..., 0] - eager[..., 0]).abs() <= lower).all()
    assert ((native[..., -1] - eager[..., -1]).abs() <= upper).all()
    # the outside mass: 1 - (the table's mass), each edge within its bound
    assert ((native_outside - eager_outside).abs() <= (lower + upper) * (1 + eager_outside)).all()


@needs_kernel
@pytest.mark.parametrize("window", [(0, 15), (3, 18), (10, 41), (0, 300)], ids=str)
@pytest.mark.parametrize("family", FAMILIES)
def test_the_kernels_edge_means_are_the_eager_ones(monkeypatch, family, window):
    """``d log pi_edge / d eta = E[X | edge set]`` from both routes' backward passes."""
    for edge in (0, -1):
        (table, native), (_, eager) = both_routes(monkeypatch, family, window, grad_at=edge)
        lower, upper = edge_tolerance(table, window)
        bound = (lower if edge == 0 else upper) * (1 + eager.abs())
        assert ((native - eager).abs() <= bound).all(), (edge, (native - eager).abs().max())


@needs_kernel
@pytest.mark.parametrize("grad_dtype", [torch.float32, torch.float64])
def test_the_kernels_backward_is_the_eager_one(monkeypatch, grad_dtype):
    window, n = (3, 18), 16
    g = torch.randn(81, n, generator=torch.Generator().manual_seed(0), dtype=grad_dtype)
    grads = []
    for native in routes(monkeypatch):
        eta, log_norm, mean, recurrence, base_measure = table_inputs("poisson", window)
        eta, log_norm = eta.clone().requires_grad_(), log_norm.clone().requires_grad_()
        table, _ = folded_table(eta, log_norm, mean, recurrence, base_measure, *window, grad_dtype)
        grads.append(torch.autograd.grad((table * g).sum(), (eta, log_norm), retain_graph=True))
        if not native:  # the eager means E_j = d table_j / d eta, for the bound
            edges = [torch.autograd.grad(table[:, j].sum(), eta, retain_graph=True)[0] for j in (0, -1)]
    (native_eta, native_norm), (eager_eta, eager_norm) = grads
    means = torch.cat([edges[0][:, None], torch.arange(4.0, 18.0).expand(81, -1), edges[1][:, None]], -1)
    magnitude = (g.double().abs() * means.abs()).sum(-1)
    lower, upper = edge_tolerance(table.detach().double(), window)
    eta_bound = 2 * n * EPS64 * magnitude + (lower + upper) * magnitude
    assert ((native_eta - eager_eta).abs() <= eta_bound).all()
    norm_bound = 2 * n * EPS64 * g.double().abs().sum(-1)
    assert ((native_norm - eager_norm).abs() <= norm_bound).all()


@needs_kernel
def test_the_backward_stays_differentiable_under_create_graph(monkeypatch):
    """REBAR and RELAX differentiate a gradient: ``d/dw (d/d eta sum(w * table)) = E_j``, by both routes."""
    window = (3, 18)
    second = []
    for _ in routes(monkeypatch):
        eta, log_norm, mean, recurrence, base_measure = table_inputs("poisson", window)
        eta = eta.clone().requires_grad_()
        weight = torch.ones(16, dtype=torch.float64, requires_grad=True)
        table, _ = folded_table(eta, log_norm, mean, recurrence, base_measure, *window, torch.float64)
        (grad_eta,) = torch.autograd.grad((table * weight).sum(), eta, create_graph=True)
        second.append(torch.autograd.grad(grad_eta.sum(), weight)[0])
    native, eager = second
    assert torch.equal(native[1:-1], eager[1:-1]) and torch.equal(native[1:-1], torch.arange(4.0, 18.0).double() * 81)
    lower, upper = edge_tolerance(table.detach(), window)  # per row; the edges sum the rows' means
    assert (native[[0, -1]] - eager[[0, -1]]).abs().le(torch.stack([lower.sum(), upper.sum()]) * eager[[0, -1]]).all()


@needs_kernel
def test_a_float32_table_is_the_eager_one_rounded(monkeypatch):
    """A float32 table: both routes round the same float64 interior once, and edges within their bound."""
    window = (3, 18)
    (native, _), (eager, _) = both_routes(monkeypatch, "poisson", window, dtype=torch.float32)
    assert native.dtype == eager.dtype == torch.float32
    assert torch.equal(native[..., 1:-1], eager[..., 1:-1])
    _, upper = edge_tolerance(eager.double(), window)
    bound = upper.unsqueeze(-1) + EPS32 * eager.double().abs()  # a float64 difference, then one rounding
    assert ((native.double() - eager.double()).abs() <= bound).all()


def run_python(code: str, **env) -> subprocess.CompletedProcess:
    environment = {**os.environ, **env}
    return subprocess.run(
        [sys.executable, "-W", "always::RuntimeWarning", "-c", textwrap.dedent(code)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


BUILD_A_TABLE = """
    import warnings, torch
    from gengs_lightning.distributions import TruncatedPoisson, grid_native
    table = TruncatedPoisson(torch.tensor([0.5, 4.0, 30.0]), window=16).log_pmf
    print(grid_native.usable(table), torch.logsumexp(table, -1).abs().max().item())
"""


def test_without_a_compiler_the_eager_route_runs_with_one_warning(tmp_path):
    result = run_python(
        BUILD_A_TABLE + "    TruncatedPoisson(torch.tensor(2.0), window=(2, 9)).log_pmf\n",
        CXX=str(tmp_path / "no-such-compiler"),
        GENGS_NATIVE_CACHE=str(tmp_path / "cache"),
    )
    assert result.returncode == 0, result.stderr
    usable, normalisation = result.stdout.split()
    assert usable == "False" and float(normalisation) < 1e-6
    assert result.stderr.count("RuntimeWarning") == 1
    assert "folded_table" in result.stderr and "GENGS_NATIVE=0" in result.stderr


def test_gengs_native_0_turns_the_kernel_off_silently(tmp_path):
    result = run_python(BUILD_A_TABLE, GENGS_NATIVE="0", GENGS_NATIVE_CACHE=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0] == "False"
    assert "Warning" not in result.stderr and not list(tmp_path.iterdir())


@needs_kernel
def test_the_library_is_built_once_and_shared(tmp_path):
    first = run_python(BUILD_A_TABLE, GENGS_NATIVE_CACHE=str(tmp_path))
    assert first.returncode == 0, first.stderr
    assert first.stdout.split()[0] == "True"
    (library,) = tmp_path.iterdir()  # one library, no leftover partial build
    built = library.stat().st_mtime_ns
    second = run_python(BUILD_A_TABLE, GENGS_NATIVE_CACHE=str(tmp_path))
    assert second.stdout == first.stdout and library.stat().st_mtime_ns == built


@needs_kernel
def test_a_large_call_split_over_threads_is_bitwise_the_one_thread_call():
    """Above ``kParallelWork`` grid entries the kernel splits its rows over threads; rows are independent."""
    rate = torch.logspace(-3, 3, 4099, dtype=torch.float64).requires_grad_()  # 4099 x 64 entries, odd split
    g = torch.randn(4099, 61, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    threads = torch.get_num_threads()
    results = []
    try:
        for count in (1, 3):
            torch.set_num_threads(count)
            member = TruncatedPoisson(rate, window=(3, 63))
            (grad,) = torch.autograd.grad((member.log_pmf * g).sum(), rate)
            results.append((member.log_pmf.detach(), member.tail_mass, grad))
    finally:
        torch.set_num_threads(threads)
    for one, split in zip(*results, strict=True):
        assert torch.equal(one, split)


def test_changing_the_outside_mass_in_place_leaves_the_backward_intact():
    """The kernel's per-row results share one buffer; the outside mass must leave it as its own tensor."""
    rate = torch.tensor([0.5, 4.0, 30.0], dtype=torch.float64, requires_grad=True)
    member = TruncatedPoisson(rate, window=(2, 9))
    member.tail_mass.mul_(2.0)
    (grad,) = torch.autograd.grad(member.log_pmf[..., -1].sum(), rate)
    assert torch.isfinite(grad).all()
