"""Outside reference suite (issue 9): the truncated families against ``scipy.stats``.

The checks of PyTorch's ``test/distributions/test_distributions.py`` (``test_poisson_log_prob``,
``test_geometric_log_prob_and_entropy``, ``test_binomial_log_prob_and_entropy``,
``test_negative_binomial_log_prob``, ``_check_sampler_discrete``, ``test_argmax_relaxed_categorical``,
``TestAgainstScipy``, ``TestKL.test_kl_monte_carlo``), ported to the window-folded families. No
expected value here comes from this package: every reference is built from scipy's ``logpmf``,
``logcdf`` and ``logsf`` (journal Definition 3: ``pi_a = P(X <= a)``, ``pi_k = P(X = k)`` inside,
``pi_b = P(X >= b) = sf(b - 1)``).

Covers:

* the log-PMF table (interior and both edges, one-sided windows ``n`` and two-sided ``[a, b]``) in
  float64 and, built from float32 parameters, in float32;
* its mean and variance against the folded scipy table, and against scipy's untruncated moments
  within the tail bound as the window grows (NeurIPS Theorem 2);
* exact draws, hard GenGS draws and the argmax of the relaxed weights: chi-square against the
  folded scipy table (PyTorch's ``_check_sampler_discrete`` and ``test_argmax_relaxed_categorical``);
* ``tau -> infinity``: the relaxed value tends to the uniform average of the outcomes;
* the closed-form window KL against a Monte Carlo estimate from exact draws and against a
  brute-force float64 sum over scipy tables.

scipy mappings (checked in ``test_scipy_mapping_matches_the_documented_conventions``):
``Poisson(rate) = poisson(rate)``, ``Geometric(p) = geom(p, loc=-1)`` (failures before the first
success), ``NegativeBinomial(r, p) = nbinom(r, 1 - p)`` (our ``p`` is the success probability that
scipy calls ``1 - p``), ``Binomial(N, p) = binom(N, p)``.

Tolerances. A float64 log-PMF entry is a sum ``log p_k = eta k + h_k - A`` of a few terms (``eta k``,
the lgamma terms of ``h_k``, ``A``), on our side and on scipy's alike. Each term is computed to a few
ulps of its own magnitude (lgamma is accurate to <= 4 ulps away from its zeros in glibc and cephes;
``eta`` carries 1-2 ulps from ``log``/``logsigmoid`` that ``k`` multiplies) and each of the <= 4
additions adds half an ulp of a partial sum, so each side is within ``~6`` ulps of the magnitude
``S = 1 + max_k sum |terms|`` over the window and the two sides differ by at most
``TOL_ULPS = 16`` ulps of ``S`` (``S`` is the condition number of the entry: log-space absolute error
= relative error of the probability). That is ``~1e-14`` for small parameters and ``~4e-11`` for
Poisson(1e4) (``S ~ 2e5``), i.e. the "1e-10 relative" of float64. An edge is a log of a sum of ``m``
such terms: the same bound (for the upper edge with the share-weighted ``S`` of the tail terms
where that is larger, see ``_upper_edge_scale``) plus ``m`` ulps of summation and 2 ulps of the
result. A float32 table is computed in float64 and rounded once: half an ulp of float32,
``EPS32 / 2 * |log pi|`` on top of the float64 bound (``~6e-8`` relative). Statistical checks use ``Z_SE`` standard errors and chi-square at
``dist_testing.ALPHA``, with sample sizes derived from the standard error each check needs.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from functools import cache

import numpy as np
import pytest
import torch
from distributions.dist_testing import EPS32, EPS64, Z_SE, chi2_critical, chi_square, mean_se
from scipy import integrate, special, stats
from torch.distributions import Binomial, Geometric, NegativeBinomial, Poisson, kl_divergence

from gengs_lightning.distributions import (
    GenGS,
    TruncatedBinomial,
    TruncatedDiscrete,
    TruncatedGeometric,
    TruncatedNegativeBinomial,
    TruncatedPoisson,
    Window,
)

#: Ulps of the term magnitude ``S`` by which our float64 log-PMF and scipy's may differ (module docstring).
TOL_ULPS = 16
#: Below this, scipy's ``logcdf``/``logsf`` (computed as ``log(cdf)``) lose precision to underflow; the
#: reference then sums ``logpmf`` over the edge's outcomes in log space instead.
LOG_UNDERFLOW = math.log(1e-290)
EULER_GAMMA = 0.5772156649015329


# ---------------------------------------------------------------------------------------------------
# the cases: a family, its parameters and a window
# ---------------------------------------------------------------------------------------------------
def _complementary(p: float) -> tuple[float, float]:
    """``(p, q)`` with ``p + q == 1`` exactly in float64 and ``p`` within an ulp of the nominal value.

    scipy's negative binomial takes the complement ``q = 1 - p`` of our success probability; rounding
    ``1 - 1e-4`` costs 1e-12 of relative precision in ``q``'s complement, which the interior
    ``k log p`` would inherit (measured: 37 ulps at NB(0.5, 1e-4)). The larger of the two is computed
    from the smaller (exact by Sterbenz' lemma), so both sides see the same distribution.
    """
    if p >= 0.5:
        return p, 1.0 - p
    q = 1.0 - p
    return 1.0 - q, q


@dataclass(frozen=True)
class Case:
    """One family member on one window (``None``: a binomial's whole support)."""

    family: str
    params: tuple[float, ...]
    window: int | tuple[int, int] | None

    @property
    def id(self) -> str:
        params = ",".join(f"{p:g}" for p in self.params)
        window = (
            "all"
            if self.window is None
            else (f"n{self.window}" if isinstance(self.window, int) else str(list(self.window)).replace(" ", ""))
        )
        return f"{self.family}({params})-{window}"

    @property
    def win(self) -> Window:
        if self.window is None:
            return Window(0, int(self.params[0]))
        return Window.of(self.window)

    def build(self, dtype: torch.dtype = torch.float64):
        """Our truncated distribution: float64 from probabilities, float32 from float32 rates / logits."""
        f = self.family
        if dtype == torch.float64:
            if f == "poisson":
                return TruncatedPoisson(torch.tensor(self.params[0], dtype=dtype), self.window)
            if f == "geometric":
                return TruncatedGeometric(probs=torch.tensor(self.params[0], dtype=dtype), window=self.window)
            if f == "negbin":
                p, _ = _complementary(self.params[1])
                return TruncatedNegativeBinomial(self.params[0], probs=torch.tensor(p, dtype=dtype), window=self.window)
            return TruncatedBinomial(
                int(self.params[0]), probs=torch.tensor(self.params[1], dtype=dtype), window=self.window
            )
        if f == "poisson":
            return TruncatedPoisson(torch.tensor(self.params[0], dtype=dtype), self.window)
        logits = torch.tensor(special.logit(self.params[-1]), dtype=dtype)
        if f == "geometric":
            return TruncatedGeometric(logits=logits, window=self.window)
        if f == "negbin":
            return TruncatedNegativeBinomial(self.params[0], logits=logits, window=self.window)
        return TruncatedBinomial(int(self.params[0]), logits=logits, window=self.window)

    def scipy(self, dtype: torch.dtype = torch.float64):
        """The scipy distribution with exactly the parameter values :meth:`build` passed (as float64)."""
        f = self.family
        if f == "poisson":
            return stats.poisson(float(torch.tensor(self.params[0], dtype=dtype)))
        if dtype == torch.float64:
            p = self.params[-1]
            p, q = _complementary(p) if f == "negbin" else (p, 1.0 - p)
        else:  # the float32 logits, exactly; p and 1 - p each to an ulp of float64 (negligible here)
            logit = float(torch.tensor(special.logit(self.params[-1]), dtype=dtype))
            p, q = float(special.expit(logit)), float(special.expit(-logit))
        if f == "geometric":
            return stats.geom(p, loc=-1)
        if f == "negbin":  # total_count is stored in the parameters' dtype (0.1 is not a float32)
            return stats.nbinom(float(torch.tensor(self.params[0], dtype=dtype)), q)
        return stats.binom(int(self.params[0]), p)

    def magnitudes(self, k: np.ndarray) -> np.ndarray:
        """``sum |terms of log p_k|`` at the outcomes ``k`` (the terms scipy and we both add up)."""
        k = np.asarray(k, dtype=np.float64)
        f, pr = self.family, self.params
        if f == "poisson":
            return np.abs(k * math.log(pr[0])) + special.gammaln(k + 1) + pr[0]
        if f == "geometric":
            return np.abs(k * math.log1p(-pr[0])) + abs(math.log(pr[0]))
        if f == "negbin":
            r, p = pr
            lgr = abs(special.gammaln(r))
            return (
                np.abs(k * math.log(p))
                + abs(r * math.log1p(-p))
                + special.gammaln(k + r)
                + lgr
                + special.gammaln(k + 1)
            )
        n, p = int(pr[0]), pr[1]
        k = np.minimum(k, n)  # beyond the support there are no terms (zero mass)
        return (
            np.abs(k * special.logit(p))
            + abs(n * math.log1p(-p))
            + special.gammaln(n + 1)
            + special.gammaln(k + 1)
            + special.gammaln(n - k + 1)
        )

    def term_scale(self, high: int) -> float:
        """``S = 1 + max_k sum |terms of log p_k|`` over ``k = 0 .. high`` (the module docstring's bound)."""
        return 1.0 + float(self.magnitudes(np.arange(high + 1)).max())


def _upper_tail_terms(ref, high: int) -> np.ndarray:
    """scipy's ``logpmf`` on ``high, high + 1, ...``, far enough that the rest is below 1e-26 of the sum."""
    m = 64
    while True:
        t = ref.logpmf(np.arange(high, high + m))
        if not np.isfinite(t[-1]) or t[-1] < t.max() - 60.0:
            return t
        m *= 2


@cache
def _tail_terms(case: Case, dtype: torch.dtype = torch.float64) -> np.ndarray:
    """:func:`_upper_tail_terms` of the case's scipy distribution from its window's upper end (cached)."""
    return _upper_tail_terms(case.scipy(dtype), case.win.high)


@cache
def _upper_edge_scale(case: Case) -> float:
    """``1 + sum_k w_k S_k`` over the outcomes ``k >= b`` of the upper edge, ``w_k`` their share of its mass.

    A log-sum of terms whose logs are off by ``c ulps * S_k`` each is off by ``c ulps * sum_k w_k S_k``
    (first order), so the upper edge is as precise as the terms that carry its mass, which lie beyond
    the window (far beyond for heavy tails, e.g. NB(0.1, 0.9999)).
    """
    high = case.win.high
    terms = _tail_terms(case)
    shares = np.exp(terms - special.logsumexp(terms))
    k = high + np.arange(len(terms))
    keep = shares > 0
    return 1.0 + float(shares[keep] @ case.magnitudes(k[keep]))


def _summed_edge(case: Case, dtype: torch.dtype, side: str) -> tuple[float, float]:
    """An edge as the log-sum of scipy's ``logpmf`` over its outcomes, with the tolerance of that route.

    The bound of the module docstring with the edge's own scale (:func:`_upper_edge_scale` for the
    upper one); ``m`` terms add ``m`` ulps of summation.
    """
    w = case.win
    if side == "low":
        terms, scale = case.scipy(dtype).logpmf(np.arange(w.low + 1)), case.term_scale(w.low)
    else:
        terms, scale = _tail_terms(case, dtype), max(case.term_scale(w.high), _upper_edge_scale(case))
    value = float(special.logsumexp(terms))
    return value, TOL_ULPS * EPS64 * scale + (len(terms) + 2 * abs(value)) * EPS64


@cache
def reference(case: Case, dtype: torch.dtype = torch.float64) -> dict:
    """The folded table from scipy, in float64, and the per-entry tolerance of our float64 table.

    Returns a dict with ``log_pmf`` (``(n,)``), ``tol`` (absolute log-space tolerance per entry, float64
    bound), ``edge_route`` (which scipy route gave each edge) and ``scale``.
    """
    ref, w = case.scipy(dtype), case.win
    scale = case.term_scale(w.high)
    base = TOL_ULPS * EPS64 * scale
    if w.size == 1:  # everything folds into the one category
        return {"log_pmf": np.zeros(1), "tol": np.zeros(1), "scale": scale, "edge_route": ("-", "-")}
    k = np.arange(w.low, w.high + 1)
    log_pmf = ref.logpmf(k).astype(np.float64)
    tol = np.full(w.size, base)
    low, high = float(ref.logcdf(w.low)), float(ref.logsf(w.high - 1))
    tol[0] += (w.low + 1 + 2 * abs(low)) * EPS64
    tol[-1] = TOL_ULPS * EPS64 * max(scale, _upper_edge_scale(case)) + (w.size + 2 * abs(high)) * EPS64
    low_route = high_route = "scipy"
    if not low > LOG_UNDERFLOW:
        (low, tol[0]), low_route = _summed_edge(case, dtype, "low"), "sum"
    if not high > LOG_UNDERFLOW:
        (high, tol[-1]), high_route = _summed_edge(case, dtype, "high"), "sum"
    log_pmf[0], log_pmf[-1] = low, high
    return {"log_pmf": log_pmf, "tol": tol, "scale": scale, "edge_route": (low_route, high_route)}


def _folded(ref, w: Window) -> np.ndarray:
    """The folded log table of any scipy distribution on ``w`` (log-sums where cdf/sf underflow)."""
    if w.size == 1:
        return np.zeros(1)
    log_pmf = ref.logpmf(np.arange(w.low, w.high + 1)).astype(np.float64)
    low, high = float(ref.logcdf(w.low)), float(ref.logsf(w.high - 1))
    if not low > LOG_UNDERFLOW:
        low = float(special.logsumexp(ref.logpmf(np.arange(w.low + 1))))
    if not high > LOG_UNDERFLOW:
        high = float(special.logsumexp(_upper_tail_terms(ref, w.high)))
    log_pmf[0], log_pmf[-1] = low, high
    return log_pmf


def _ref_pmf(case: Case) -> np.ndarray:
    return np.exp(reference(case)["log_pmf"])


def _seed(*parts) -> int:
    """A fixed seed per test and case (stable across runs and Python versions)."""
    return zlib.crc32("/".join(map(str, parts)).encode())


# ---------------------------------------------------------------------------------------------------
# the grid
# ---------------------------------------------------------------------------------------------------
POISSON_RATES = [1e-6, 1e-3, 0.5, 7.0, 100.0, 1000.0, 1e4]
POISSON_WINDOWS = [1, 2, 10, 500, (3, 4), (50, 150), (750, 1249), (9500, 10499)]
PROBS = [1e-4, 0.05, 0.3, 0.5, 0.9, 1 - 1e-4]
GEOMETRIC_WINDOWS = [1, 2, 10, 100, 500, (3, 30), (100, 400)]
NB_COUNTS = [0.1, 0.5, 3.0, 5.0, 50.0]
NB_PROBS = [1e-4, 0.3, 0.9, 1 - 1e-4]
NB_WINDOWS = [1, 2, 10, 500, (3, 30), (100, 400)]
BINOMIAL_COUNTS = [1, 10, 100, 2000]
BINOMIAL_PROBS = [1e-4, 0.3, 0.5, 1 - 1e-4]
BINOMIAL_WINDOWS = [None, 1, 2, 10, 500, (3, 8), (900, 1100)]


def _table_cases() -> list[Case]:
    cases = [Case("poisson", (r,), w) for r in POISSON_RATES for w in POISSON_WINDOWS]
    cases += [Case("geometric", (p,), w) for p in PROBS for w in GEOMETRIC_WINDOWS]
    cases += [Case("negbin", (r, p), w) for r in NB_COUNTS for p in NB_PROBS for w in NB_WINDOWS]
    for n in BINOMIAL_COUNTS:
        for p in BINOMIAL_PROBS:
            for w in BINOMIAL_WINDOWS:
                if w is None or Window.of(w).high <= n:
                    cases.append(Case("binomial", (n, p), w))
    return cases


TABLE_CASES = _table_cases()


# ---------------------------------------------------------------------------------------------------
# 0. the reference itself
# ---------------------------------------------------------------------------------------------------
def test_scipy_mapping_matches_the_documented_conventions():
    """The four scipy mappings give the untruncated families of this package (torch's conventions)."""
    k = torch.arange(12, dtype=torch.float64)
    pairs = [
        (stats.poisson(3.5), TruncatedPoisson.untruncated(rate=torch.tensor(3.5, dtype=torch.float64))),
        (stats.geom(0.3, loc=-1), TruncatedGeometric.untruncated(probs=torch.tensor(0.3, dtype=torch.float64))),
        (
            stats.nbinom(2.5, 1 - 0.375),
            TruncatedNegativeBinomial.untruncated(
                torch.tensor(2.5, dtype=torch.float64), probs=torch.tensor(0.375, dtype=torch.float64)
            ),
        ),
        (stats.binom(11, 0.3), TruncatedBinomial.untruncated(11, probs=torch.tensor(0.3, dtype=torch.float64))),
    ]
    assert [type(d) for _, d in pairs] == [Poisson, Geometric, NegativeBinomial, Binomial]
    for ref, dist in pairs:
        np.testing.assert_allclose(dist.log_prob(k).numpy(), ref.logpmf(k.numpy()), rtol=1e-13, atol=0)
        np.testing.assert_allclose(float(dist.mean), ref.mean(), rtol=1e-14)
        np.testing.assert_allclose(float(dist.variance), ref.var(), rtol=1e-14)
    # and our interior entries are those log-PMFs (one entry per family; the grid below does the rest)
    for case in (
        Case("poisson", (3.5,), 12),
        Case("geometric", (0.3,), 12),
        Case("negbin", (2.5, 0.375), 12),
        Case("binomial", (11, 0.3), None),
    ):
        ours = case.build().log_pmf.numpy()[1:-1]
        np.testing.assert_allclose(ours, case.scipy().logpmf(np.arange(1, case.win.high)), rtol=1e-13, atol=0)


@pytest.mark.parametrize("case", [c for c in TABLE_CASES if c.win.size > 1], ids=lambda c: c.id)
def test_scipy_edges_agree_with_summed_logpmf(case):
    """scipy's two routes to an edge (``logcdf``/``logsf`` and a log-sum of ``logpmf``) agree to the tolerance.

    This validates the reference (and the tolerance model) independently of this package.
    """
    table = reference(case)
    for i, side in ((0, "low"), (-1, "high")):
        summed, tol = _summed_edge(case, torch.float64, side)
        value = table["log_pmf"][i]
        assert abs(summed - value) <= tol + table["tol"][i], (side, value, summed, table["edge_route"])


# ---------------------------------------------------------------------------------------------------
# 1. log-PMF tables (torch's test_*_log_prob and TestAgainstScipy.test_log_prob)
# ---------------------------------------------------------------------------------------------------
def _compare_table(ours: np.ndarray, expected: np.ndarray, tol: np.ndarray, what: str) -> None:
    err = np.abs(ours - expected)
    err[np.isnan(err)] = np.inf  # -inf - -inf cannot happen: every reference entry is finite
    assert np.isfinite(expected).all()
    bad = ~(err <= tol)
    if bad.any():
        idx = np.flatnonzero(bad)
        where = ["low edge" if i == 0 else ("high edge" if i == len(ours) - 1 else f"interior {i}") for i in idx[:5]]
        raise AssertionError(
            f"{what}: {bad.sum()} of {len(ours)} entries off; worst error {err.max():.3g} "
            f"(tolerance there {tol[np.argmax(err)]:.3g}); at {where}; ours {ours[idx[:5]]}, scipy {expected[idx[:5]]}"
        )


@pytest.mark.parametrize("case", TABLE_CASES, ids=lambda c: c.id)
def test_log_pmf_matches_scipy_float64(case):
    table = case.build(torch.float64)
    assert table.window == case.win and table.log_pmf.dtype == torch.float64
    ref = reference(case)
    _compare_table(table.log_pmf.numpy(), ref["log_pmf"], ref["tol"], case.id)


@pytest.mark.parametrize("case", TABLE_CASES, ids=lambda c: c.id)
def test_log_pmf_matches_scipy_float32(case):
    """Built from float32 parameters (rates; logits for the Bernoulli families), compared in float64."""
    table = case.build(torch.float32)
    assert table.log_pmf.dtype == torch.float32
    ref = reference(case, torch.float32)
    # computed in float64, rounded once to float32: half an ulp, EPS32 / 2 * |x| (+ the float32 subnormal
    # spacing 2^-149 for entries that round to zero)
    tol = ref["tol"] + 0.5 * EPS32 * np.abs(ref["log_pmf"]) + 2.0**-149
    _compare_table(table.log_pmf.double().numpy(), ref["log_pmf"], tol, case.id + " float32")


# ---------------------------------------------------------------------------------------------------
# 2. moments (TestAgainstScipy.test_mean / test_variance)
# ---------------------------------------------------------------------------------------------------
def _moment_tolerances(pmf: np.ndarray, c: np.ndarray, rel: np.ndarray) -> tuple[float, float]:
    """Bounds on the mean and variance errors when each ``pmf_k`` has relative error ``rel_k``.

    ``d mean / d pmf_k = c_k`` and, at a normalised table, ``d var / d pmf_k = (c_k - mean)^2`` (so a
    normalisation error is covered); plus the float64 summation of ``n`` terms and the error of the
    mean that the variance is centred at.
    """
    n = len(pmf)
    mean = float(pmf @ c)
    dev = c - mean
    var = float(pmf @ dev**2)
    rel = rel + 2 * EPS64
    tol_mean = float(pmf @ (rel * np.abs(c))) + n * EPS64 * float(pmf @ np.abs(c))
    # the variance is centred at the computed mean, off by up to tol_mean: sum p (dev - d)^2 moves by
    # up to 2 d E|dev| + d^2
    tol_var = float(pmf @ (rel * dev**2)) + 2 * n * EPS64 * var
    tol_var += 2 * tol_mean * float(pmf @ np.abs(dev)) + tol_mean**2
    return tol_mean, tol_var


@pytest.mark.parametrize("case", TABLE_CASES, ids=lambda c: c.id)
def test_mean_and_variance_match_the_folded_scipy_table(case):
    table = case.build(torch.float64)
    ref = reference(case)
    pmf, c = np.exp(ref["log_pmf"]), np.arange(case.win.low, case.win.high + 1, dtype=np.float64)
    mean = float(pmf @ c)
    var = float(pmf @ (c - mean) ** 2)
    tol_mean, tol_var = _moment_tolerances(pmf, c, np.expm1(ref["tol"]))
    assert abs(float(table.mean) - mean) <= tol_mean, (float(table.mean), mean, tol_mean)
    assert abs(float(table.variance) - var) <= tol_var, (float(table.variance), var, tol_var)


def _tail_bounds(ref, w: Window) -> tuple[float, float]:
    """Bounds on ``|E[Y] - E[X]|`` and ``|Var Y - Var X|`` for ``Y = clip(X, a, b)``, from scipy.

    ``E[Y] - E[X] = E[(a - X)^+] - E[(X - b)^+]``; ``Var Y - Var X = E[Y^2 - X^2] - (E Y - E X)(E Y + E X)``
    with ``|E[Y^2 - X^2]| <= E[(X^2 - b^2); X > b] + E[(a^2 - X^2); X < a]``.
    """
    top = max(w.high, 64)
    while ref.logsf(top) > math.log(1e-30):  # beyond: < 1e-30 of the mass, below float64 resolution here
        top *= 2
    k = np.arange(top + 1, dtype=np.float64)
    p = ref.pmf(k)
    above, below = k > w.high, k < w.low
    d_mean = float(p[above] @ (k[above] - w.high) + p[below] @ (w.low - k[below]))
    d_square = float(p[above] @ (k[above] ** 2 - w.high**2) + p[below] @ (w.low**2 - k[below] ** 2))
    mean = float(ref.mean())
    return d_mean, d_square + d_mean * (2 * abs(mean) + d_mean)


CONVERGENCE = {
    "poisson(1e-06)": (("poisson", (1e-6,)), [1, 2, 5]),
    "poisson(7)": (("poisson", (7.0,)), [5, 10, 20, 40]),
    "poisson(100)": (("poisson", (100.0,)), [(80, 120), (50, 150), (0, 250)]),
    "poisson(1000)": (("poisson", (1000.0,)), [500, (900, 1100), (750, 1249), (500, 1600)]),
    "poisson(1e4)": (("poisson", (1e4,)), [(9900, 10100), (9500, 10499), (9000, 11000)]),
    "geometric(0.05)": (("geometric", (0.05,)), [10, 100, 500, 1000]),
    "geometric(0.9999)": (("geometric", (1 - 1e-4,)), [1, 2, 10]),
    "negbin(0.5,0.9)": (("negbin", (0.5, 0.9)), [10, 100, 500]),
    "negbin(5,0.9)": (("negbin", (5.0, 0.9)), [10, 100, 500]),
    "negbin(3,0.0001)": (("negbin", (3.0, 1e-4)), [1, 2, 10]),
    "binomial(2000,0.3)": (("binomial", (2000, 0.3)), [(550, 650), (500, 700), None]),
    "binomial(2000,0.0001)": (("binomial", (2000, 1e-4)), [1, 5, 20]),
}


@pytest.mark.parametrize("name", list(CONVERGENCE))
def test_moments_approach_scipy_untruncated_within_the_tail_bound(name):
    """NeurIPS Theorem 2 against scipy: ``|E_trunc - E| <= bound(window)``, the bound vanishing."""
    (family, params), windows = CONVERGENCE[name]
    bounds = []
    for window in windows:
        case = Case(family, params, window)
        table, ref = case.build(), case.scipy()
        d_mean, d_var = _tail_bounds(ref, case.win)
        pmf = _ref_pmf(case)
        c = np.arange(case.win.low, case.win.high + 1, dtype=np.float64)
        tol_mean, tol_var = _moment_tolerances(pmf, c, np.expm1(reference(case)["tol"]))
        # scipy's closed-form moments carry their own rounding: the mean is computed as ``mean_0 + loc``
        # (``1 / p - 1`` for the geometric: cancellation), a few ulps of |mean_0| + |loc|
        loc = abs(ref.kwds.get("loc", 0))
        tol_mean += 4 * EPS64 * (abs(ref.mean()) + loc)
        tol_var += 4 * EPS64 * ref.var()
        err_mean = abs(float(table.mean) - ref.mean())
        err_var = abs(float(table.variance) - ref.var())
        assert err_mean <= d_mean + tol_mean, (case.id, err_mean, d_mean, tol_mean)
        assert err_var <= d_var + tol_var, (case.id, err_var, d_var, tol_var)
        bounds.append((d_mean, d_var, err_mean, err_var))
        if window == windows[0]:  # the first window really is too small: the sequence is informative
            assert err_mean > 1000 * tol_mean, (case.id, err_mean, tol_mean)
    d_mean, d_var, err_mean, err_var = bounds[-1]
    assert d_mean <= 1e-9 * max(1.0, abs(ref.mean())) and d_var <= 1e-9 * max(1.0, ref.var()), bounds[-1]


# ---------------------------------------------------------------------------------------------------
# 3. samplers: chi-square against the folded scipy table (torch's _check_sampler_discrete)
# ---------------------------------------------------------------------------------------------------
N_CHI2 = 20_000

SAMPLER_CASES = [
    Case("poisson", (1e-3,), 2),
    Case("poisson", (0.5,), 3),
    Case("poisson", (7.0,), 10),
    Case("poisson", (100.0,), (50, 150)),
    Case("poisson", (100.0,), (95, 105)),
    Case("poisson", (1e4,), (9900, 10100)),
    Case("geometric", (1e-4,), 100),
    Case("geometric", (0.3,), 10),
    Case("geometric", (0.5,), (3, 30)),
    Case("negbin", (0.5, 0.9), 50),
    Case("negbin", (5.0, 0.3), 20),
    Case("negbin", (0.1, 0.3), (1, 5)),
    Case("binomial", (10, 0.3), None),
    Case("binomial", (2000, 0.5), (950, 1050)),
    Case("binomial", (2000, 1e-4), 5),
]


def _draw_indices(case: Case, sampler: str, n_samples: int) -> torch.Tensor:
    """Category indices ``0 .. n-1`` of draws from one of the three samplers of the table."""
    table = case.build(torch.float64)
    torch.manual_seed(_seed("chi2", case.id))  # the same noise for the three samplers of a case
    if sampler == "sample":
        x = table.sample((n_samples,))
    elif sampler == "gengs_hard":
        x = GenGS(table, 0.7, hard=True).rsample((n_samples,))
    else:  # the index of the largest relaxed weight: GenGS over one-hot outcomes is the weight vector
        n = table.num_outcomes
        one_hot = TruncatedDiscrete(table.log_pmf, torch.eye(n, dtype=torch.float64), normalized=True)
        weights = GenGS(one_hot, 2.5).rsample((n_samples,))
        assert weights.shape == (n_samples, n)
        torch.testing.assert_close(weights.sum(-1), torch.ones(n_samples, dtype=torch.float64), rtol=0, atol=1e-12)
        return weights.argmax(-1)
    assert torch.equal(x, x.round()) and x.min() >= case.win.low and x.max() <= case.win.high
    return (x - case.win.low).long()


@pytest.mark.parametrize("sampler", ["sample", "gengs_hard", "gengs_argmax"])
@pytest.mark.parametrize("case", SAMPLER_CASES, ids=lambda c: c.id)
def test_samplers_pass_chi_square_against_scipy(case, sampler):
    n = case.win.size
    counts = torch.bincount(_draw_indices(case, sampler, N_CHI2), minlength=n)
    pmf = torch.from_numpy(_ref_pmf(case))
    stat, df = chi_square(counts, pmf)
    assert df >= 1, "design: the case must leave at least two cells with 5 expected draws"
    assert stat < chi2_critical(df), (stat, df, chi2_critical(df))
    # power: the table of X + 1 (an off-by-one, e.g. a geom without loc=-1) is rejected wherever the
    # test can see it. The statistic of the expected counts against it is its noncentrality (with the
    # helper's own pooling); where that makes a miss less likely than 1e-6, rejection is asserted.
    ref = case.scipy()
    shifted = torch.from_numpy(np.exp(_folded(ref.dist(*ref.args, loc=ref.kwds.get("loc", 0) + 1), case.win)))
    noncentrality, df_alt = chi_square(pmf * N_CHI2, shifted)
    if df_alt >= 1 and stats.ncx2.cdf(chi2_critical(df_alt), df_alt, noncentrality) < 1e-6:
        stat_alt, df_alt = chi_square(counts, shifted)
        assert stat_alt > chi2_critical(df_alt), (stat_alt, df_alt, noncentrality)


# ---------------------------------------------------------------------------------------------------
# 4. tau -> infinity: the relaxed value tends to the uniform average of the outcomes
# ---------------------------------------------------------------------------------------------------
@cache
def _gumbel_range_moments(n: int) -> tuple[float, float]:
    """``E[G]`` and an upper bound on ``E[G^2]`` for the range ``G = max - min`` of ``n`` iid Gumbels.

    ``max`` is a Gumbel shifted by ``log n`` (mean ``gamma + log n``, variance ``pi^2 / 6``); the moments
    of ``min`` come from its density ``n f(x) S(x)^(n-1)`` by quadrature. ``max`` and ``min`` are
    non-decreasing in the same independent variables, hence positively correlated, so
    ``E[G^2] <= Var(max) + Var(min) + E[G]^2``.
    """
    if n == 1:
        return 0.0, 0.0

    def density(x):
        log_f = -(x + math.exp(-x))
        survival = -math.expm1(-math.exp(-x))
        return n * math.exp(log_f + (n - 1) * math.log(survival)) if survival > 0 else 0.0

    mass = integrate.quad(density, -8, 60, limit=200)[0]
    m1 = integrate.quad(lambda x: x * density(x), -8, 60, limit=200)[0]
    m2 = integrate.quad(lambda x: x * x * density(x), -8, 60, limit=200)[0]
    assert abs(mass - 1) < 1e-9
    e_max = EULER_GAMMA + math.log(n)
    e_range = e_max - m1
    return e_range, math.pi**2 / 6 + (m2 - m1**2) + e_range**2


TAU_CASES = [
    Case("poisson", (7.0,), 25),
    Case("poisson", (100.0,), (50, 150)),
    Case("poisson", (1000.0,), 500),
    Case("geometric", (0.3,), (3, 30)),
    Case("negbin", (0.5, 0.9), 100),
    Case("binomial", (10, 0.3), None),
    Case("binomial", (2000, 0.5), (900, 1100)),
]
N_TAU = 4_000


@pytest.mark.parametrize("case", TAU_CASES, ids=lambda c: c.id)
def test_relaxed_value_tends_to_the_uniform_average_as_tau_grows(case):
    """``z = sum_k c_k softmax((log pi + g) / tau)_k -> mean(c)`` as ``tau -> infinity``.

    With ``y = log pi + g`` and ``f(t) = sum_k c_k softmax(t y)_k``: ``f(0) = mean(c)``,
    ``f'(0) = Cov_uniform(c, y)`` whose expectation over ``g`` is ``b1 = mean_k (c_k - mean c) log pi_k``
    (the Gumbels are iid), and ``|f''| <= (b - a) Var_w(y) <= (b - a) R^2 / 4`` with ``R = range(y)``
    (Popoviciu). So ``|E z - mean(c) - b1 / tau| <= (b - a) E[R^2] / (8 tau^2)`` with
    ``R <= range(log pi) + range(g)``. ``log pi`` is scipy's folded table, not ours.
    """
    table = case.build(torch.float64)
    ref = reference(case)["log_pmf"]
    c = np.arange(case.win.low, case.win.high + 1, dtype=np.float64)
    centre, width, n = float(c.mean()), float(case.win.high - case.win.low), case.win.size
    b1 = float(np.mean((c - centre) * ref))
    spread = float(ref.max() - ref.min())
    e_range, e_range_sq = _gumbel_range_moments(n)
    e_r2 = spread**2 + 2 * spread * e_range + e_range_sq
    scale = spread + e_range
    torch.manual_seed(_seed("tau", case.id))
    for factor in (10.0, 100.0, 1000.0):
        tau = factor * scale
        z = GenGS(table, tau).rsample((N_TAU,))
        mean, se = mean_se(z)
        mean, se = float(mean), float(se)
        bias2 = width * e_r2 / (8 * tau**2)
        # the brief's form: the uniform average within Monte Carlo error plus the whole bias bound ...
        assert abs(mean - centre) <= Z_SE * se + abs(b1) / tau + bias2, (tau, mean, centre, se, b1 / tau, bias2)
        # ... and the sharper one: the first-order term is right, so the approach has the predicted speed
        assert abs(mean - centre - b1 / tau) <= Z_SE * se + bias2, (tau, mean - centre, b1 / tau, se, bias2)


# ---------------------------------------------------------------------------------------------------
# 5. the window KL (journal Proposition 6; torch's TestKL.test_kl_monte_carlo)
# ---------------------------------------------------------------------------------------------------
KL_PAIRS = [
    (Case("poisson", (0.5,), 10), Case("poisson", (2.0,), 10)),
    (Case("poisson", (1e-6,), 5), Case("poisson", (1e-3,), 5)),
    (Case("poisson", (100.0,), (50, 150)), Case("poisson", (110.0,), (50, 150))),
    (Case("poisson", (1000.0,), (750, 1249)), Case("poisson", (1050.0,), (750, 1249))),
    (Case("poisson", (1e4,), (9500, 10499)), Case("poisson", (1.02e4,), (9500, 10499))),
    (Case("geometric", (1e-4,), 500), Case("geometric", (3e-4,), 500)),
    (Case("geometric", (0.3,), (3, 30)), Case("geometric", (0.5,), (3, 30))),
    (Case("negbin", (0.5, 0.9), 100), Case("negbin", (0.5, 0.8), 100)),
    (Case("negbin", (5.0, 0.9), 500), Case("negbin", (5.0, 0.85), 500)),
    (Case("negbin", (3.0, 1 - 1e-4), (100, 400)), Case("negbin", (3.0, 0.99), (100, 400))),
    (Case("binomial", (2000, 0.5), None), Case("binomial", (2000, 0.48), None)),
    (Case("binomial", (2000, 1 - 1e-4), None), Case("binomial", (2000, 1 - 5e-4), None)),
    (Case("binomial", (10, 1e-4), None), Case("binomial", (10, 0.3), None)),
]
#: Relative precision the Monte Carlo KL must reach (``Z_SE`` standard errors below 10% of the KL).
KL_MC_PRECISION = 0.1
KL_MC_MAX_DRAWS = 400_000


def _pair_id(pair):
    return f"{pair[0].id}||{pair[1].id}"


def _kl_reference(p_case: Case, q_case: Case) -> tuple[float, float, float]:
    """Brute-force KL from scipy tables in float64, its tolerance, and ``Var_p(log p - log q)``.

    With per-entry log tolerances ``d^p``, ``d^q`` and ``r_k = log p_k - log q_k``, a perturbation of
    ``KL = sum_k p_k r_k`` is at most ``sum_k p_k (d^p_k |r_k| + d^p_k + d^q_k)``, plus the float64 sum.
    """
    rp, rq = reference(p_case), reference(q_case)
    p = np.exp(rp["log_pmf"])
    r = rp["log_pmf"] - rq["log_pmf"]
    kl = float(p @ r)
    tol = float(p @ (rp["tol"] * (np.abs(r) + 1) + rq["tol"])) + 2 * len(p) * EPS64 * float(p @ np.abs(r))
    var = float(p @ (r - kl) ** 2)
    return kl, tol, var


@pytest.mark.parametrize("pair", KL_PAIRS, ids=_pair_id)
def test_kl_matches_the_brute_force_scipy_sum(pair):
    p_case, q_case = pair
    kl = float(kl_divergence(p_case.build(), q_case.build()))
    expected, tol, _ = _kl_reference(p_case, q_case)
    assert expected > 0
    assert abs(kl - expected) <= tol, (kl, expected, tol, abs(kl - expected) / expected)


@pytest.mark.parametrize("pair", KL_PAIRS, ids=_pair_id)
def test_kl_matches_monte_carlo_from_exact_draws(pair):
    p_case, q_case = pair
    p, q = p_case.build(), q_case.build()
    expected, _, var = _kl_reference(p_case, q_case)
    # the draws the precision needs: Z_SE * sqrt(var / N) <= KL_MC_PRECISION * KL
    n_draws = max(1_000, math.ceil(var * (Z_SE / (KL_MC_PRECISION * expected)) ** 2))
    assert n_draws <= KL_MC_MAX_DRAWS, f"design: {n_draws} draws needed, pick a pair with a larger KL"
    torch.manual_seed(_seed("kl", _pair_id(pair)))
    x = p.sample((n_draws,))
    d = p.log_prob(x) - q.log_prob(x)
    estimate = float(d.mean())
    se = math.sqrt(var / n_draws)  # exact, from the scipy tables
    kl = float(kl_divergence(p, q))
    assert abs(estimate - kl) <= Z_SE * se, (estimate, kl, se, n_draws)
    assert abs(estimate - expected) <= Z_SE * se, (estimate, expected, se, n_draws)
