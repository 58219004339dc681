"""The folded table at its edges (issue 9): exact edge categories wherever the window lies, no NaN or Inf.

Covers:

* regressions, each of which failed before the fix: a lower edge ``log P(X <= a)`` that underflowed
  to ``-inf`` when it lay far below the window's largest term (NaN gradients, an infinite KL, a
  CLI run stopped by NaN), and an upper edge ``log P(X >= b)`` that was a 16-term series with a
  geometric bound, off by 3e-4 in log where the tail is small and slowly decaying;
* both edges against scipy (``logcdf``, ``logsf``, or a log-sum of ``logpmf`` where those underflow)
  over rates 1e-6 .. 1e4, probabilities 1e-4 .. 1 - 1e-4, one- and two-sided windows of 2 to 500
  outcomes placed left of, across and right of the mass, binomials up to N = 2000 and negative
  binomials with r < 1 and r > 1, in float64 and (from float32 parameters) in float32;
* the edge gradients: ``d log pi / d eta = E[X | edge set]`` against scipy's conditional means
  (``E[X; X >= b] = mean P'(X >= b - 1)`` with the shifted family ``P'``);
* a NaN/Inf sweep over that grid: the table, the KL between two members on one window and GenGS
  ``rsample`` (soft and hard), values and gradients with respect to the raw encoder output, in
  float64, float32 and under CPU bf16 autocast (float32 and bfloat16 encoder outputs).

Tolerances. An edge is the log of a sum of terms ``exp(eta k + h_k - A)``; each exponent is computed
(here and in scipy) to a few ulps of the magnitude ``S = 1 + max_k (|eta| k + |A| + sum |lgamma
terms of h_k|)`` over the terms involved, and a sum of ``m`` terms adds ``m`` ulps. So both sides
agree to ``TOL_ULPS * S + 2 m`` ulps (absolute, in log space: a relative error of the mass). The
package takes ``P(X >= b)`` as the complement ``1 - P(X < b)`` only where that tail holds at least
``SERIES_THRESHOLD`` of the mass, where the complement's relative error is the head's absolute one
divided by the tail; there the upper edge's tolerance is multiplied by ``1 + P(X < b) / P(X >= b)``
(at most ``1 / SERIES_THRESHOLD``). A float32 table is rounded once: half an ulp of float32 more.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import cache

import numpy as np
import pytest
import torch
from distributions.dist_testing import EPS32, EPS64
from torch.distributions import kl_divergence

from gengs_lightning.distributions import (
    GenGS,
    Prior,
    TruncatedBinomial,
    TruncatedGeometric,
    TruncatedNegativeBinomial,
    TruncatedPoisson,
    Window,
    family_class,
)
from gengs_lightning.distributions.grid import SERIES_TERMS, SERIES_THRESHOLD
from gengs_lightning.estimators import GenGSExplicit

stats = pytest.importorskip("scipy.stats")
special = pytest.importorskip("scipy.special")

#: Ulps of the term magnitude ``S`` by which our float64 edges and scipy's may differ (module docstring).
TOL_ULPS = 16
#: Below this scipy's ``logcdf``/``logsf`` (``log`` of an underflowing ``cdf``/``sf``) lose precision;
#: the reference then sums ``logpmf`` over the edge's outcomes.
LOG_UNDERFLOW = math.log(1e-290)


# ---------------------------------------------------------------------------------------------------
# cases and their scipy reference
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """One family member (``params`` as the family names them, floats) on one window."""

    family: str
    params: tuple[float, ...]
    window: tuple[int, int]

    @property
    def id(self) -> str:
        return f"{self.family}({','.join(f'{p:g}' for p in self.params)})-[{self.window[0]},{self.window[1]}]"

    def build(self, dtype: torch.dtype = torch.float64, requires_grad: bool = False):
        """Our table, from parameters of ``dtype``: the rate or ``probs`` (the logits in float32)."""
        win = Window(*self.window)
        if self.family == "poisson":
            return TruncatedPoisson(torch.tensor(self.params[0], dtype=dtype, requires_grad=requires_grad), win)
        p = self.probs_pair()[0]
        given = {"probs": torch.tensor(p, dtype=dtype, requires_grad=requires_grad)}
        if dtype != torch.float64:
            given = {"logits": torch.tensor(special.logit(p), dtype=dtype, requires_grad=requires_grad)}
        if self.family == "geometric":
            return TruncatedGeometric(**given, window=win)
        if self.family == "negbin":
            return TruncatedNegativeBinomial(self.params[0], **given, window=win)
        return TruncatedBinomial(int(self.params[0]), **given, window=win)

    def probs_pair(self) -> tuple[float, float]:
        """``(p, 1 - p)`` summing to 1 exactly, ``p`` within an ulp of 1 of the nominal value.

        scipy's negative binomial takes ``1 - p``; its rounding would cost ``p = 1e-4`` 1e-12 of
        relative precision (1e-10 in ``log p_k`` at ``k = 100``), so the smaller of the two is
        computed from the larger (exactly, by Sterbenz' lemma) and both sides use that ``p``.
        """
        p = self.params[-1]
        return (p, 1.0 - p) if p >= 0.5 else (1.0 - (1.0 - p), 1.0 - p)

    def scipy(self, dtype: torch.dtype = torch.float64):
        """The scipy distribution with the parameter values :meth:`build` used (as float64)."""
        if self.family == "poisson":
            return stats.poisson(float(torch.tensor(self.params[0], dtype=dtype)))
        if dtype == torch.float64:
            p, q = self.probs_pair()
        else:  # the float32 logit, exactly
            logit = float(torch.tensor(special.logit(self.params[-1]), dtype=dtype))
            p, q = float(special.expit(logit)), float(special.expit(-logit))
        if self.family == "geometric":
            return stats.geom(p, loc=-1)
        if self.family == "negbin":  # ours: successes with probability p before r failures
            return stats.nbinom(float(torch.tensor(self.params[0], dtype=dtype)), q)
        return stats.binom(int(self.params[0]), p)

    def shifted(self, dtype: torch.dtype = torch.float64):
        """``(mean, P')`` with ``k p_k = mean p'_{k-1}``: Poisson itself, NB ``r + 1``, binomial ``N - 1``."""
        ref = self.scipy(dtype)
        if self.family == "poisson":
            return ref.mean(), ref
        if self.family == "binomial":
            n, p = ref.args
            return ref.mean(), stats.binom(n - 1, p)
        r, q = ref.args if self.family == "negbin" else (1.0, ref.args[0])
        return ref.mean(), stats.nbinom(r + 1.0, q)

    def term_scale(self, top: int) -> float:
        """``S`` of the module docstring over the outcomes ``0 .. top``."""
        family = {"poisson": TruncatedPoisson, "geometric": TruncatedGeometric}.get(self.family)
        k = np.arange(top + 1, dtype=np.float64)
        if self.family == "poisson":
            rate = self.params[0]
            return 1.0 + float((abs(math.log(rate)) * k + rate + special.gammaln(k + 1)).max())
        p = self.params[-1]
        logit = special.logit(p)
        if family is TruncatedGeometric:
            eta, log_norm, lgammas = math.log1p(-p), -math.log(p), 0.0
        elif self.family == "negbin":
            r = self.params[0]
            eta, log_norm = math.log(p), -r * math.log1p(-p)
            lgammas = special.gammaln(k + r) + abs(special.gammaln(r)) + special.gammaln(k + 1)
        else:
            n = int(self.params[0])
            k = k[k <= n]
            eta, log_norm = logit, -n * math.log1p(-p)
            lgammas = special.gammaln(n + 1) + special.gammaln(k + 1) + special.gammaln(n - k + 1)
        return 1.0 + float(np.max(abs(eta) * k + abs(log_norm) + lgammas))


def _upper_terms(ref, high: int) -> np.ndarray:
    """scipy's ``logpmf`` on ``high, high + 1, ...`` until the rest is below 1e-26 of the sum."""
    m = 64
    while True:
        terms = ref.logpmf(np.arange(high, high + m))
        if not np.isfinite(terms[-1]) or terms[-1] < terms.max() - 60.0 - math.log(m):
            return terms
        m *= 2


def ref_log_cdf(ref, a: int) -> float:
    """``log P(X <= a)``."""
    value = float(ref.logcdf(a))
    return value if value > LOG_UNDERFLOW else float(special.logsumexp(ref.logpmf(np.arange(a + 1))))


def ref_log_sf(ref, b: int) -> float:
    """``log P(X >= b)``."""
    value = float(ref.logsf(b - 1))
    return value if value > LOG_UNDERFLOW else float(special.logsumexp(_upper_terms(ref, b)))


@cache
def reference(case: Case, dtype: torch.dtype = torch.float64) -> dict:
    """scipy's two edges, their tolerances for our float64 table, and the conditional means."""
    ref, (low, high) = case.scipy(dtype), case.window
    log_low, log_high = ref_log_cdf(ref, low), ref_log_sf(ref, high)
    terms = high + 1 + SERIES_TERMS
    base = (TOL_ULPS * case.term_scale(high + SERIES_TERMS) + 2 * terms) * EPS64
    tail = math.exp(log_high)
    complement = 1.0 + (1.0 - tail) / tail if tail >= SERIES_THRESHOLD else 1.0
    mean, shifted = case.shifted(dtype)
    mean_low = mean * math.exp(ref_log_cdf(shifted, low - 1) - log_low) if low > 0 else 0.0
    mean_high = mean * math.exp(ref_log_sf(shifted, high - 1) - log_high)
    return {
        "log_pmf": np.array([log_low, log_high]),
        "tol": np.array([base, base * complement]),
        "mean": np.array([mean_low, mean_high]),
        "untruncated_mean": mean,
    }


def _windows(mean: float, sd: float, top: int | None) -> list[tuple[int, int]]:
    """One- and two-sided windows of 2 to 500 outcomes left of, across and right of the mass."""
    c, spread = round(mean), max(sd, 1.0)
    windows = [(0, 1), (0, 15), (0, 99), (0, 499)]
    windows += [(c - 8, c + 7), (c - 250, c + 249), (c, c + 1)]
    windows += [(round(mean - 12 * spread) - 16, round(mean - 12 * spread) - 1)]  # left of the mass
    windows += [(round(mean + 12 * spread), round(mean + 12 * spread) + 15)]  # right of it
    windows += [(round(mean + 40 * spread), round(mean + 40 * spread) + 499)]  # far right
    valid = []
    for low, high in windows:
        if top is not None:
            low, high = min(low, top - 1), min(high, top)
        if 0 <= low < high and (low, high) not in valid:
            valid.append((low, high))
    return valid


def _cases() -> list[Case]:
    cases = []
    for rate in [1e-6, 1e-3, 0.1, 2.0, 7.5, 30.0, 200.0, 1000.0, 1e4]:
        windows = _windows(rate, math.sqrt(rate), None) + [(750, 1249), (9900, 10100)]
        cases += [Case("poisson", (rate,), w) for w in dict.fromkeys(windows)]
    for p in [1e-4, 1e-3, 0.02, 0.25, 0.5, 0.9, 0.99, 1 - 1e-4]:
        ref = stats.geom(p, loc=-1)
        cases += [Case("geometric", (p,), w) for w in _windows(ref.mean(), ref.std(), None)]
    for r in [0.1, 0.7, 1.5, 5.0, 50.0]:
        for p in [1e-4, 0.1, 0.5, 0.9, 0.99, 1 - 1e-4]:
            ref = stats.nbinom(r, 1 - p)
            cases += [Case("negbin", (r, p), w) for w in _windows(ref.mean(), ref.std(), None)]
    for n in [1, 7, 200, 2000]:
        for p in [1e-4, 0.02, 0.3, 0.5, 0.9, 0.98, 1 - 1e-4]:
            ref = stats.binom(n, p)
            windows = [(0, n)] + _windows(ref.mean(), ref.std(), n)
            cases += [Case("binomial", (n, p), w) for w in dict.fromkeys(windows)]
    return cases


CASES = _cases()
FAMILIES = ["poisson", "geometric", "negbin", "binomial"]


def _edge_errors(case: Case, dtype: torch.dtype) -> tuple[np.ndarray, np.ndarray]:
    """``|ours - scipy|`` of both edges and their tolerances."""
    table = case.build(dtype)
    assert table.log_pmf.dtype == dtype and table.window == Window(*case.window)
    ours = table.log_pmf[[0, -1]].double().numpy()
    ref = reference(case, dtype)
    tol = ref["tol"]
    if dtype != torch.float64:
        tol = tol + 0.5 * EPS32 * np.abs(ref["log_pmf"]) + 2.0**-149
    err = np.abs(ours - ref["log_pmf"])
    err[~np.isfinite(ours)] = np.inf
    return err, tol


# ---------------------------------------------------------------------------------------------------
# 1. regressions (issue 9)
# ---------------------------------------------------------------------------------------------------
def _eps(dtype: torch.dtype) -> float:
    return EPS64 if dtype == torch.float64 else EPS32


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("hard", [False, True], ids=["soft", "hard"])
@pytest.mark.parametrize("rate", [1000.0, 1e4])
def test_large_rate_lower_edge_is_exact_and_gradients_finite(rate, hard, dtype):
    """``P(X <= 0) = exp(-rate)`` lies ~1e3 .. 1e4 below the window's largest term: kept, not -inf."""
    r = torch.tensor([rate], dtype=dtype, requires_grad=True)
    table = TruncatedPoisson(r, 500)
    assert torch.isfinite(table.log_pmf).all()
    # log P(X <= 0) = -rate: a few float64 ulps of rate, then one float32 rounding
    tol = 4 * EPS64 * rate + (0.5 * EPS32 * rate if dtype == torch.float32 else 0.0)
    assert abs(table.log_pmf[0, 0].item() + rate) <= tol, table.log_pmf[0, 0]
    # d log P(X <= 0) / d rate = E[X | X <= 0] / rate - 1 = -1
    (grad_edge,) = torch.autograd.grad(table.log_pmf[0, 0], r, retain_graph=True)
    assert abs(grad_edge.item() + 1.0) <= 4 * _eps(dtype), grad_edge
    torch.manual_seed(0)
    z = GenGS(table, 0.5, hard=hard).rsample((8,))
    (grad,) = torch.autograd.grad(z.sum(), r)
    assert torch.isfinite(z).all() and torch.isfinite(grad).all(), grad


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_kl_between_distant_poissons_is_finite(dtype):
    """``KL(TruncPois(1) || TruncPois(1000))`` on ``[0, 499]``: was inf (``q``'s lower edge was -inf)."""
    rate_q = torch.tensor(1000.0, dtype=dtype, requires_grad=True)
    p, q = TruncatedPoisson(torch.tensor(1.0, dtype=dtype), 500), TruncatedPoisson(rate_q, 500)
    kl = kl_divergence(p, q)
    k = np.arange(500)
    log_p, log_q = stats.poisson(1.0).logpmf(k), stats.poisson(1000.0).logpmf(k)
    ref_q = reference(Case("poisson", (1000.0,), (0, 499)))
    log_p[0], log_p[-1] = -1.0, ref_log_sf(stats.poisson(1.0), 499)  # P(X <= 0) = p_0 = e^-1
    log_q[0], log_q[-1] = ref_q["log_pmf"]
    pi_p = np.exp(log_p)
    expected = float(np.sum(pi_p * (log_p - log_q)))
    # the log-ratios carry a few ulps of the largest |log q| (~1e4); float32 rounds each table entry
    tol = 64 * EPS64 * np.abs(log_q).max() + (4 * EPS32 * np.abs(pi_p * log_q).sum() if dtype == torch.float32 else 0)
    assert abs(kl.item() - expected) <= tol, (kl.item(), expected)
    # d KL / d rate_q = -sum_k pi^p_k d log pi^q_k / d rate_q = sum_k pi^p_k (1 - E_q[X | cell k] / rate_q)
    cell_means = k.astype(np.float64)
    cell_means[0], cell_means[-1] = ref_q["mean"]
    expected_grad = float(np.sum(pi_p * (1.0 - cell_means / 1000.0)))
    (grad,) = torch.autograd.grad(kl, rate_q)
    assert abs(grad.item() - expected_grad) <= 64 * _eps(dtype) * expected_grad, (grad, expected_grad)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_binomial_whole_support_keeps_its_smallest_edge(dtype):
    """``TruncatedBinomial(2000, .5)`` on ``[0, 2000]``: ``log P(X <= 0) = 2000 log(1/2) = -1386.29``."""
    table = TruncatedBinomial(2000, probs=torch.tensor(0.5, dtype=dtype))
    expected = 2000 * math.log(0.5)
    tol = 16 * EPS64 * 2 * abs(expected) + (0.5 * EPS32 * abs(expected) if dtype == torch.float32 else 0.0)
    assert abs(table.log_pmf[0].item() - expected) <= tol, table.log_pmf[0]
    assert abs(table.log_pmf[-1].item() - expected) <= tol, table.log_pmf[-1]
    assert torch.isfinite(table.log_pmf).all()


@pytest.mark.parametrize("probs", [0.97, 0.98, 0.99])
def test_binomial_near_one_trains(probs):
    """The toy task's ``Binomial(200, p)`` with ``p -> 0.98`` (the CLI run that stopped with NaN at step 6).

    ``P(X <= 0) = 0.02^200 = e^-782`` underflowed against the mode: ``-inf`` there, NaN gradients.
    """
    logits = torch.tensor([special.logit(probs)], dtype=torch.float32, requires_grad=True)
    table = TruncatedBinomial.from_raw(logits.unsqueeze(-1), None, total_count=200)
    assert torch.isfinite(table.log_pmf).all()
    expected = 200 * float(torch.nn.functional.logsigmoid(-logits.detach().double()))
    assert abs(table.log_pmf[0, 0].item() - expected) <= (0.5 * EPS32 + 64 * EPS64) * abs(expected)
    torch.manual_seed(0)
    z = GenGS(table, 0.97).rsample((16,))
    prior = TruncatedBinomial(200, probs=torch.tensor(0.98))
    (grad,) = torch.autograd.grad(((z - 196.0) ** 2).mean() + kl_divergence(table, prior).sum(), logits)
    assert torch.isfinite(grad).all(), grad


@pytest.mark.parametrize(
    ("case", "old_error"),
    [
        (Case("poisson", (1000.0,), (750, 1249)), 3.4e-4),
        (Case("negbin", (5.0, 0.9), (0, 499)), 3.2e-4),
    ],
    ids=lambda c: c.id if isinstance(c, Case) else "",
)
def test_small_slowly_decaying_upper_tail_is_exact(case, old_error):
    """``log P(X >= b)`` where the tail is small and decays slowly: was off by ``old_error`` in log."""
    err, tol = _edge_errors(case, torch.float64)
    assert err[1] <= tol[1], (err, tol)
    assert tol[1] < old_error / 1e5  # the tolerance is far below the old error


# ---------------------------------------------------------------------------------------------------
# 2. the edges against scipy over the grid
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("family", FAMILIES)
def test_edges_match_scipy_over_the_grid(family, dtype):
    bad = []
    for case in (c for c in CASES if c.family == family):
        err, tol = _edge_errors(case, dtype)
        for side, e, t in zip(("low", "high"), err, tol, strict=True):
            if not e <= t:
                bad.append(f"{case.id} {side}: error {e:.3g}, tolerance {t:.3g}")
    assert not bad, f"{len(bad)} edges off:\n" + "\n".join(bad[:20])


def test_grid_covers_the_regimes():
    """The grid reaches the regimes of the issue: edges below 1e-300 and every upper-tail size."""
    tails = np.array([reference(c)["log_pmf"][1] for c in CASES])
    lows = np.array([reference(c)["log_pmf"][0] for c in CASES])
    assert (lows < -745).sum() >= 20 and (tails < -745).sum() >= 20  # below exp's float64 range
    for lo, hi in [(-math.inf, -50.0), (-50.0, -5.0), (-5.0, math.log(0.5)), (math.log(0.5), 0.0)]:
        assert ((tails > lo) & (tails <= hi)).sum() >= 20, (lo, hi)
    assert {c.family for c in CASES} == set(FAMILIES)
    assert max(c.params[0] for c in CASES if c.family == "binomial") == 2000


# ---------------------------------------------------------------------------------------------------
# 3. the edge gradients: conditional means
# ---------------------------------------------------------------------------------------------------
GRADIENT_CASES = [c for c in CASES if c.window[1] - c.window[0] <= 16 or c.window == (0, 499)][::3]


def _natural_slope(case: Case) -> float:
    """``d eta / d parameter`` for the parameter :meth:`Case.build` differentiates (float64: rate or probs)."""
    if case.family == "poisson":
        return 1.0 / case.params[0]
    p = case.params[-1]
    return {"geometric": -1.0 / (1.0 - p), "negbin": 1.0 / p, "binomial": 1.0 / (p * (1.0 - p))}[case.family]


@pytest.mark.parametrize("family", FAMILIES)
def test_edge_gradients_are_scipy_conditional_means(family):
    """``d log pi_edge / d theta = (E[X | edge] - E[X]) d eta / d theta``: ``E[X | edge]`` recovered and compared.

    Tolerance: the conditional mean comes from the same sums as its edge and carries the same
    relative error (the edge's tolerance), plus the rounding of recovering it from the gradient.
    """
    bad = []
    for case in (c for c in GRADIENT_CASES if c.family == family):
        table = case.build(requires_grad=True)
        param = table.rate if family == "poisson" else table.probs
        ref = reference(case)
        slope, mean = _natural_slope(case), ref["untruncated_mean"]
        for i, side in ((0, "low"), (1, "high")):
            if i == 0 and case.window[0] == 0:
                continue  # P(X <= 0) = p_0: its conditional mean is 0, its gradient exactly -mean
            (grad,) = torch.autograd.grad(table.log_pmf[-i], param, retain_graph=True)
            ours = grad.item() / slope + mean
            expected = ref["mean"][i]
            tol = (ref["tol"][i] + 8 * EPS64) * (expected + mean)
            if not abs(ours - expected) <= tol:
                bad.append(f"{case.id} {side}: E ours {ours:.17g}, scipy {expected:.17g}, tolerance {tol:.3g}")
    assert not bad, f"{len(bad)} conditional means off:\n" + "\n".join(bad[:20])


# ---------------------------------------------------------------------------------------------------
# 4. NaN / Inf sweep: table, KL, GenGS rsample, values and gradients w.r.t. the raw encoder output
# ---------------------------------------------------------------------------------------------------
SWEEP_PROBS = [1e-4, 1e-3, 0.1, 0.5, 0.9, 0.999, 1 - 1e-4]
#: sweep key -> (family name, structural parameters, free parameter, its values)
SWEEP = {
    "poisson": ("poisson", {}, "rate", [1e-6, 1e-3, 0.5, 2.0, 30.0, 1e3, 1e4]),
    "geometric": ("geometric", {}, "probs", SWEEP_PROBS),
    "negbin-0.3": ("negative_binomial", {"total_count": 0.3}, "probs", SWEEP_PROBS),
    "negbin-5": ("negative_binomial", {"total_count": 5.0}, "probs", SWEEP_PROBS),
    "binomial-20": ("binomial", {"total_count": 20}, "probs", SWEEP_PROBS),
    "binomial-2000": ("binomial", {"total_count": 2000}, "probs", SWEEP_PROBS),
}
SWEEP_WINDOWS = [(0, 0), (5, 5), (0, 1), (0, 15), (0, 499), (3, 4), (50, 150), (750, 1249), (9900, 10100)]
MODES = ["f64", "f32", "bf16-autocast", "bf16-encoder"]


def _sweep_raw(key: str, mode: str) -> tuple[type, dict, torch.Tensor]:
    """The family class, its structural parameters and raw encoder outputs ``(B, 1)`` over the sweep."""
    name, structural, param, values = SWEEP[key]
    values = torch.tensor(values, dtype=torch.float64)
    raw = TruncatedPoisson(values, 1).to_raw() if param == "rate" else torch.logit(values).unsqueeze(-1)
    raw = raw.to({"f64": torch.float64, "bf16-encoder": torch.bfloat16}.get(mode, torch.float32))
    return family_class(name), structural, raw


def _windows_for(key: str) -> list[tuple[int, int]]:
    top = SWEEP[key][1].get("total_count") if SWEEP[key][0] == "binomial" else None
    return [w for w in SWEEP_WINDOWS if top is None or w[1] <= top] + ([(0, top)] if top else [])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("key", list(SWEEP))
def test_no_nan_or_inf_anywhere(key, mode):
    """Every window (sizes 1 to 500, one- and two-sided), soft and hard, temperatures 0.01 and 10."""
    cls, structural, raw0 = _sweep_raw(key, mode)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode.startswith("bf16"))
    problems = []
    for window in _windows_for(key):
        win = Window(*window)
        for hard, tau in itertools.product((False, True), (0.01, 10.0)):
            raw = raw0.clone().requires_grad_()
            torch.manual_seed(0)
            with autocast:
                posterior = cls.from_raw(raw, win, **structural)
                prior = cls.from_raw(raw.detach().flip(0), win, **structural)
                kl = kl_divergence(posterior, prior) + kl_divergence(prior, posterior)
                z = GenGS(posterior, tau, hard=hard).rsample((4,))
                loss = (z * torch.linspace(-1, 1, z.shape[1], dtype=z.dtype)).sum() + kl.sum() + posterior.log_pmf.sum()
            # a window of one outcome is a constant: nothing in it depends on the parameters
            (grad,) = torch.autograd.grad(loss, raw) if win.size > 1 else (torch.zeros(()),)
            for what, value in [
                ("log_pmf", posterior.log_pmf),
                ("tail_mass", posterior.tail_mass),
                ("kl", kl),
                ("sample", z),
                ("grad", grad),
            ]:
                if not torch.isfinite(value).all():
                    problems.append(f"{win} hard={hard} tau={tau}: {what} {value.flatten()[:8].tolist()}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("family", "params", "window"),
    [
        ("poisson", {"rate": 4.0}, 16),
        ("poisson", {"rate": 1e3}, 500),
        ("negative_binomial", {"total_count": 5.0, "probs": 0.9}, 500),
        ("binomial", {"total_count": 200, "probs": 0.98}, None),
    ],
    ids=["poisson-16", "poisson-1e3-500", "negbin-500", "binomial-200"],
)
def test_estimator_is_finite_at_the_edges(family, params, window, mode):
    """The estimator path (``GenGSExplicit``): loss and gradient finite for encoder outputs over the range."""
    prior = Prior(family, params)
    estimator = GenGSExplicit(window=window, tau=0.5)
    raw = torch.linspace(-12.0, 12.0, 9, dtype=torch.float64).unsqueeze(-1).unsqueeze(-1)
    raw = raw.to({"f64": torch.float64, "bf16-encoder": torch.bfloat16}.get(mode, torch.float32)).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode.startswith("bf16")):
        out = estimator(raw, lambda z: (z - 3.0).square().sum(-1), prior)
    (grad,) = torch.autograd.grad(out.surrogate, raw)
    assert torch.isfinite(out.loss).all() and torch.isfinite(grad).all(), (out.loss, grad)


@pytest.mark.parametrize("window", [(0, 15), (3, 40), (50, 150)])
@pytest.mark.parametrize("key", list(SWEEP))
def test_a_batch_mixing_the_edge_routes_equals_its_rows_one_by_one(key, window):
    """Rows whose upper edge takes the series, the complement or the continued fraction, in one batch.

    The table computes the grid's sums only for the rows that need them, so a batch must give every row
    what that row gives alone: the log-PMF, the outside mass and the gradient, bit for bit.
    """
    cls, structural, raw = _sweep_raw(key, "f64")
    top = structural.get("total_count") if SWEEP[key][0] == "binomial" else None
    if top is not None and window[1] > top:
        pytest.skip("window beyond the binomial support")
    win = Window(*window)

    def build(raw_rows):
        raw_rows = raw_rows.clone().requires_grad_()
        table = cls.from_raw(raw_rows, win, **structural)
        weights = torch.linspace(-1.0, 1.0, win.size, dtype=torch.float64)
        (grad,) = torch.autograd.grad((table.log_pmf.clamp_min(-1e300) * weights).sum(), raw_rows)
        return table.log_pmf.detach(), table.tail_mass, grad

    batch = build(raw)
    alone = [torch.cat(parts) for parts in zip(*(build(raw[i : i + 1]) for i in range(raw.shape[0])), strict=True)]
    # every operation on the grid is a row's own (no BLAS product, whose kernel and rounding follow the
    # batch's shape), so a row is bitwise what it is alone
    for what, ours, expected in zip(("log_pmf", "tail_mass", "grad"), batch, alone, strict=True):
        label = f"{what}, {key}, {window}"
        torch.testing.assert_close(ours, expected, rtol=0, atol=0, msg=lambda m, label=label: f"{label}: {m}")
