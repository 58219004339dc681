"""Deterministic checks of the outcome tables: normalisation, folding against brute force, limits.

Covers: PMF sums to one (every family, windows of every kind, float64 and float32); the folded PMF
and ``tail_mass`` against a brute-force fold of ``torch.distributions``; the multinomial table;
Theorem 2 (NeurIPS) / Proposition 4 (journal): the truncated moments converge to the untruncated
ones as the window grows; ``log_prob``, ``enumerate_support``, ``expand``, ``mode``, ``entropy``,
``widen``.
"""

from __future__ import annotations

import math
from itertools import pairwise

import pytest
import torch
from distributions.dist_testing import EPS64, brute_fold, log_scale
from torch.distributions import Binomial, Geometric, Multinomial, NegativeBinomial, Poisson

from gengs_lightning.distributions import (
    TruncatedBinomial,
    TruncatedCategorical,
    TruncatedDiscrete,
    TruncatedGeometric,
    TruncatedMultinomial,
    TruncatedNegativeBinomial,
    TruncatedPoisson,
    Window,
)

# Every window kind: size 1, size 2 (one- and two-sided), one-sided, two-sided.
COUNT_WINDOWS = [1, 2, (3, 4), (3, 3), 10, (2, 12), 40, (20, 60)]


def _count_table(name: str, dtype: torch.dtype, window):
    if name == "poisson":
        return TruncatedPoisson(torch.tensor([1e-3, 0.5, 7.0, 35.0], dtype=dtype), window)
    if name == "geometric_probs":
        return TruncatedGeometric(probs=torch.tensor([0.05, 0.25, 0.9], dtype=dtype), window=window)
    if name == "geometric_logits":
        return TruncatedGeometric(logits=torch.tensor([-4.0, 0.0, 3.0], dtype=dtype), window=window)
    if name == "negative_binomial_0.5":
        return TruncatedNegativeBinomial(0.5, probs=torch.tensor([0.2, 0.7, 0.95], dtype=dtype), window=window)
    if name == "negative_binomial_3":
        return TruncatedNegativeBinomial(3.0, logits=torch.tensor([-2.0, 0.5, 2.5], dtype=dtype), window=window)
    raise AssertionError(name)


COUNT_FAMILIES = ["poisson", "geometric_probs", "geometric_logits", "negative_binomial_0.5", "negative_binomial_3"]
SUM_TOL = {torch.float64: 1e-12, torch.float32: 1e-6}


# ---------------------------------------------------------------------------------------------------
# 1. normalisation
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("window", COUNT_WINDOWS, ids=str)
@pytest.mark.parametrize("family", COUNT_FAMILIES)
def test_count_pmf_sums_to_one(family, window, dtype):
    table = _count_table(family, dtype, window)
    w = Window.of(window)
    assert table.log_pmf.dtype == dtype
    assert table.log_pmf.shape[-1] == w.size
    assert torch.isfinite(table.log_pmf).all()
    assert (table.pmf >= 0).all()
    total = table.pmf.double().sum(-1)
    assert (total - 1).abs().max().item() <= SUM_TOL[dtype], total
    # the log-PMF is itself normalised (not just its exp after a renormalisation)
    assert (table.log_pmf.double().logsumexp(-1)).abs().max().item() <= SUM_TOL[dtype]
    assert torch.equal(table.outcomes, w.outcomes(dtype))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("window", [None, 1, 2, (3, 4), (5, 5), (2, 8), (0, 10), (9, 10)], ids=str)
def test_binomial_pmf_sums_to_one(window, dtype):
    table = TruncatedBinomial(10, probs=torch.tensor([0.0, 0.1, 0.5, 0.95, 1.0], dtype=dtype), window=window)
    assert torch.isfinite(table.log_pmf).all()
    total = table.pmf.double().sum(-1)
    assert (total - 1).abs().max().item() <= SUM_TOL[dtype], total


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("one_hot", [True, False])
def test_categorical_pmf_sums_to_one(one_hot, dtype, float64_default):
    torch.set_default_dtype(dtype)
    probs = torch.tensor([[0.1, 0.2, 0.7], [1e-4, 0.5, 0.4999]], dtype=dtype)
    table = TruncatedCategorical(probs=probs, one_hot=one_hot)
    assert (table.pmf.double().sum(-1) - 1).abs().max().item() <= SUM_TOL[dtype]
    torch.testing.assert_close(table.pmf, probs / probs.sum(-1, keepdim=True), rtol=0, atol=SUM_TOL[dtype])
    if one_hot:
        assert torch.equal(table.outcomes, torch.eye(3, dtype=dtype))
        assert table.event_shape == (3,)
    else:
        assert torch.equal(table.outcomes, torch.arange(3, dtype=dtype))
        assert table.window == Window(0, 2)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize(("total_count", "num_classes"), [(0, 3), (1, 2), (4, 3), (3, 5)])
def test_multinomial_pmf_sums_to_one(total_count, num_classes, dtype, float64_default):
    torch.set_default_dtype(dtype)
    probs = torch.linspace(1.0, 2.0, num_classes, dtype=dtype).expand(2, num_classes).clone()
    probs[1, 0] = 1e-3
    table = TruncatedMultinomial(total_count, probs=probs / probs.sum(-1, keepdim=True))
    assert (table.pmf.double().sum(-1) - 1).abs().max().item() <= SUM_TOL[dtype]


# ---------------------------------------------------------------------------------------------------
# 2. folding against brute force
# ---------------------------------------------------------------------------------------------------
def _f64(*values):
    return torch.tensor(values, dtype=torch.float64)


# (family class, constructor params, torch distribution, window, grid size of the brute force)
BRUTE_CASES = {
    "poisson-one-sided": (TruncatedPoisson, {"rate": _f64(0.5, 3.0, 7.0, 20.0)}, Poisson, 15, 400),
    "poisson-two-sided": (TruncatedPoisson, {"rate": _f64(3.0, 7.0, 20.0)}, Poisson, (4, 12), 400),
    "poisson-size2": (TruncatedPoisson, {"rate": _f64(0.5, 7.0)}, Poisson, (6, 7), 400),
    "poisson-deep-tail": (TruncatedPoisson, {"rate": _f64(0.5)}, Poisson, 40, 400),
    "poisson-large-rate": (TruncatedPoisson, {"rate": _f64(1e4)}, Poisson, (9900, 10100), 12000),
    "poisson-large-rate-deep": (TruncatedPoisson, {"rate": _f64(1e4)}, Poisson, (9700, 10400), 12000),
    "geometric": (TruncatedGeometric, {"probs": _f64(0.05, 0.25, 0.6)}, Geometric, 12, 2000),
    "geometric-two-sided": (TruncatedGeometric, {"probs": _f64(0.05, 0.25)}, Geometric, (3, 30), 2000),
    "geometric-deep-tail": (TruncatedGeometric, {"probs": _f64(0.3)}, Geometric, 100, 2000),
    "negbin-0.5": (TruncatedNegativeBinomial, {"total_count": 0.5, "probs": _f64(0.2, 0.5, 0.8)}, None, 10, 2000),
    "negbin-0.5-two-sided": (
        TruncatedNegativeBinomial,
        {"total_count": 0.5, "probs": _f64(0.5, 0.8)},
        None,
        (2, 9),
        2000,
    ),
    "negbin-3": (TruncatedNegativeBinomial, {"total_count": 3.0, "probs": _f64(0.2, 0.5, 0.8)}, None, 12, 2000),
    "negbin-3-two-sided": (
        TruncatedNegativeBinomial,
        {"total_count": 3.0, "probs": _f64(0.5, 0.8)},
        None,
        (5, 25),
        2000,
    ),
    "binomial-whole": (TruncatedBinomial, {"total_count": 20, "probs": _f64(0.1, 0.5, 0.9)}, None, None, 21),
    "binomial-two-sided": (TruncatedBinomial, {"total_count": 20, "probs": _f64(0.1, 0.5, 0.9)}, None, (3, 15), 21),
    "binomial-one-sided": (TruncatedBinomial, {"total_count": 20, "probs": _f64(0.3)}, None, 8, 21),
}


def _torch_dist(family, params):
    if family is TruncatedPoisson:
        return Poisson(params["rate"], validate_args=False)
    if family is TruncatedGeometric:
        return Geometric(probs=params["probs"], validate_args=False)
    if family is TruncatedNegativeBinomial:
        r = torch.tensor(params["total_count"], dtype=torch.float64)
        return NegativeBinomial(r, probs=params["probs"], validate_args=False)
    if family is TruncatedBinomial:
        return Binomial(params["total_count"], probs=params["probs"], validate_args=False)
    raise AssertionError(family)


@pytest.mark.parametrize("case", list(BRUTE_CASES))
def test_folded_pmf_matches_brute_force(case):
    family, params, _, window, grid_size = BRUTE_CASES[case]
    table = family(**params, window=window)
    w = table.window
    dist = _torch_dist(family, params)
    grid = torch.arange(grid_size, dtype=torch.float64)
    log_prob = dist.log_prob(grid.unsqueeze(-1)).T  # (batch, grid)
    folded, tail = brute_fold(log_prob, w.low, w.high)

    # float64 rounding of ``eta k + h_k - A`` is a few ulps of its largest term, i.e. a relative error
    # ``rel`` of every probability; an edge computed as the complement ``1 - P(X < b)`` inherits the
    # absolute error of the head sum, at most ``rel`` (total mass 1). Hence ``|error| <= rel (p + 1)``.
    scale = log_scale(family, table.params, w.high)
    rel = 32 * EPS64 * scale
    err = (table.pmf - folded).abs()
    assert (err <= rel * (folded + 1)).all(), (err.max(), rel)
    tail_err = (table.tail_mass - tail).abs()
    assert (tail_err <= rel * (tail + 1)).all(), (table.tail_mass, tail)

    # the comparison has power: the unfolded PMF on the window (edges not folded) is rejected
    unfolded = log_prob[..., w.low : w.high + 1].exp()
    if (tail > 1e-6).any():
        assert not ((table.pmf - unfolded).abs() <= rel * (unfolded + 1)).all()


@pytest.mark.parametrize(
    ("family", "params", "window"),
    [
        (TruncatedPoisson, {"rate": _f64(0.5)}, 40),
        (TruncatedPoisson, {"rate": _f64(1e-3)}, (0, 30)),
        (TruncatedGeometric, {"probs": _f64(0.3)}, 100),
        (TruncatedGeometric, {"probs": _f64(0.9)}, (5, 40)),
    ],
    ids=["poisson-0.5", "poisson-1e-3", "geometric-0.3", "geometric-0.9"],
)
def test_deep_upper_tail_is_accurate_in_log_space(family, params, window):
    """Where ``P(X >= b) < 1e-9`` the edge is summed directly: its log is accurate, not just its mass.

    For these cases the series remainder is exact (geometric: constant term ratio) or below float64
    resolution (Poisson with rate << b), so the log of the edge matches to float64 precision.
    """
    table = family(**params, window=window)
    w = table.window
    dist = _torch_dist(family, params)
    log_prob = dist.log_prob(torch.arange(3000, dtype=torch.float64).unsqueeze(-1)).T
    log_tail = log_prob[..., w.high :].logsumexp(-1)
    assert (log_tail < math.log(1e-9)).all()  # the series branch is the one tested
    scale = log_scale(family, table.params, w.high + 20)
    torch.testing.assert_close(table.log_pmf[..., -1], log_tail, rtol=0, atol=64 * EPS64 * scale)
    # a complement 1 - P(X < b) would have returned log(0) or garbage here
    assert torch.isfinite(table.log_pmf).all()


def test_multinomial_table_matches_torch_multinomial(float64_default):
    probs = torch.tensor([[0.2, 0.3, 0.5], [0.05, 0.9, 0.05]])
    for total_count in (1, 4, 7):
        table = TruncatedMultinomial(total_count, probs=probs)
        k = probs.shape[-1]
        assert table.outcomes.shape == (math.comb(total_count + k - 1, k - 1), k)
        assert torch.equal(table.outcomes.sum(-1), torch.full((table.num_outcomes,), float(total_count)))
        assert len({tuple(row.tolist()) for row in table.outcomes}) == table.num_outcomes
        assert (table.outcomes >= 0).all()
        reference = Multinomial(total_count, probs=probs.unsqueeze(-2)).log_prob(table.outcomes)
        torch.testing.assert_close(table.log_pmf, reference, rtol=0, atol=1e-12)
        # the log_prob of each outcome vector is the table entry
        torch.testing.assert_close(table.log_prob(table.outcomes[:, None, :]).T, reference, rtol=0, atol=1e-12)
        # moments: mean N p, covariance diagonal N p (1 - p)
        torch.testing.assert_close(table.mean, total_count * probs, rtol=0, atol=1e-12)
        torch.testing.assert_close(table.variance, total_count * probs * (1 - probs), rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------------------------
# 5. Theorem 2 (NeurIPS) / Proposition 4 (journal): moments converge as the window grows
# ---------------------------------------------------------------------------------------------------
CONVERGENCE_CASES = {
    "poisson-7": (TruncatedPoisson, {"rate": _f64(7.0)}, [5, 10, 15, 20, 25, 30]),
    "poisson-50-two-sided": (
        TruncatedPoisson,
        {"rate": _f64(50.0)},
        [(40, 60), (30, 70), (20, 80), (10, 90), (0, 110)],
    ),
    "geometric-0.25": (TruncatedGeometric, {"probs": _f64(0.25)}, [10, 20, 40, 60, 80, 100]),
    "negbin-0.5": (TruncatedNegativeBinomial, {"total_count": 0.5, "probs": _f64(0.5)}, [5, 10, 20, 30, 40]),
    "negbin-3": (TruncatedNegativeBinomial, {"total_count": 3.0, "probs": _f64(0.5)}, [5, 10, 20, 30, 45]),
}


@pytest.mark.parametrize("case", list(CONVERGENCE_CASES))
def test_truncated_moments_converge_to_untruncated(case):
    family, params, windows = CONVERGENCE_CASES[case]
    untruncated = family.untruncated(**params)
    mean_err, var_err = [], []
    for window in windows:
        table = family(**params, window=window)
        mean_err.append((table.mean - untruncated.mean).abs().item())
        var_err.append((table.variance - untruncated.variance).abs().item())
    assert all(b < a for a, b in pairwise(mean_err)), mean_err
    assert all(b < a for a, b in pairwise(var_err)), var_err
    assert mean_err[-1] < 1e-8 and var_err[-1] < 1e-8, (mean_err, var_err)
    assert mean_err[0] > 1e-3  # the first window is really too small: the sequence is informative


def test_binomial_whole_support_moments_are_exact():
    probs = _f64(0.1, 0.5, 0.9)
    table = TruncatedBinomial(20, probs=probs)
    torch.testing.assert_close(table.mean, 20 * probs, rtol=0, atol=1e-12)
    torch.testing.assert_close(table.variance, 20 * probs * (1 - probs), rtol=0, atol=1e-12)
    # the upper edge P(X >= N) is a complement 1 - P(X < N): a few ulps of 1 of absolute error
    torch.testing.assert_close(table.tail_mass, torch.zeros(3, dtype=torch.float64), rtol=0, atol=64 * EPS64)


# ---------------------------------------------------------------------------------------------------
# 13. log_prob, enumerate_support, expand, mode, entropy, widen
# ---------------------------------------------------------------------------------------------------
def test_log_prob_inside_and_outside_window():
    rate = _f64(2.0, 9.0)
    table = TruncatedPoisson(rate, (3, 12))
    inside = torch.tensor([[3.0], [7.0], [12.0]], dtype=torch.float64)
    expected = table.log_pmf[:, [0, 4, 9]].T
    torch.testing.assert_close(table.log_prob(inside), expected, rtol=0, atol=0)
    # interior entries are the untruncated log-PMF
    torch.testing.assert_close(table.log_prob(inside[1]), Poisson(rate).log_prob(inside[1]), rtol=1e-12, atol=0)
    with pytest.raises(ValueError):
        table.log_prob(torch.tensor(2.0, dtype=torch.float64))  # validated: outside the support
    with pytest.raises(ValueError):
        table.log_prob(torch.tensor(13.0, dtype=torch.float64))
    lenient = TruncatedPoisson(rate, (3, 12), validate_args=False)
    for outside in (0.0, 2.0, 13.0, 100.0, 3.5):
        value = torch.tensor(outside, dtype=torch.float64)
        assert torch.equal(lenient.log_prob(value), torch.full((2,), -math.inf, dtype=torch.float64))


def test_enumerate_support_and_expand_shapes():
    table = TruncatedPoisson(torch.full((2, 3), 4.0, dtype=torch.float64), (1, 6))
    support = table.enumerate_support()
    assert support.shape == (6, 2, 3)
    assert torch.equal(support[:, 1, 2], torch.arange(1, 7, dtype=torch.float64))
    assert table.enumerate_support(expand=False).shape == (6, 1, 1)
    # log_prob over the enumerated support is the table, batch last
    torch.testing.assert_close(table.log_prob(support).permute(1, 2, 0), table.log_pmf, rtol=0, atol=0)

    expanded = table.expand((5, 2, 3))
    assert expanded.batch_shape == (5, 2, 3)
    assert expanded.log_pmf.shape == (5, 2, 3, 6)
    assert expanded.tail_mass.shape == (5, 2, 3)
    assert torch.equal(expanded.pmf[4], table.pmf)
    assert torch.equal(expanded.tail_mass[0], table.tail_mass)
    assert expanded.window == table.window
    # pmf @ outcomes: the matrix product's summation order depends on the batch shape (a few ulps)
    torch.testing.assert_close(expanded.mean[3], table.mean, rtol=8 * EPS64, atol=0)

    multi = TruncatedMultinomial(2, probs=torch.tensor([[0.2, 0.8], [0.5, 0.5]]))
    assert multi.enumerate_support().shape == (3, 2, 2)
    assert multi.expand((4, 2)).sample((7,)).shape == (7, 4, 2, 2)


def test_mode_entropy_and_widen():
    rate = _f64(0.3, 6.5, 30.0)
    table = TruncatedPoisson(rate, 20)
    assert torch.equal(table.mode, torch.tensor([0.0, 6.0, 19.0], dtype=torch.float64))  # 30 folds onto 19
    reference = -(table.pmf * table.pmf.log()).sum(-1)
    torch.testing.assert_close(table.entropy(), reference, rtol=1e-12, atol=0)

    narrow = TruncatedPoisson(_f64(7.0), 5)
    wide = narrow.widen(eps=1e-12)
    assert isinstance(wide, TruncatedPoisson)
    assert wide.window.low == 0 and wide.window.high >= 5
    assert wide.tail_mass.item() <= 1e-12
    torch.testing.assert_close(wide.mean, _f64(7.0), rtol=1e-10, atol=0)
    plain = TruncatedDiscrete(torch.zeros(4, dtype=torch.float64), torch.arange(4, dtype=torch.float64), Window(0, 3))
    assert plain.widen() is plain
    torch.testing.assert_close(plain.tail_mass, torch.zeros((), dtype=torch.float64), rtol=0, atol=0)


def test_plain_table_normalises_its_logits():
    logits = torch.tensor([[1.0, 2.0, 3.0], [0.0, -50.0, 5.0]], dtype=torch.float64)
    table = TruncatedDiscrete(logits, torch.tensor([2.0, 5.0, 9.0], dtype=torch.float64), validate_args=False)
    torch.testing.assert_close(table.pmf, torch.softmax(logits, -1), rtol=0, atol=1e-15)
    with pytest.raises(ValueError):
        TruncatedDiscrete(logits, torch.arange(4, dtype=torch.float64))  # n mismatch


# ---------------------------------------------------------------------------------------------------
# Bugs (see the report): these tests describe the documented behaviour and fail on the package.
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["categorical", "multinomial"])
def test_logits_only_construction_with_default_validation(family):
    """Giving only ``logits`` (documented as allowed) must work with the default ``validate_args``."""
    logits = torch.tensor([0.5, -1.0, 2.0])
    if family == "categorical":
        table = TruncatedCategorical(logits=logits)
    else:
        table = TruncatedMultinomial(2, logits=logits)
    assert (table.pmf.sum(-1) - 1).abs().item() <= SUM_TOL[torch.float32]


@pytest.mark.parametrize("family", ["categorical", "multinomial"])
def test_float64_parameters_give_a_float64_table(family):
    """Like the count families, a float64 parameter must not be silently rounded to float32."""
    logits = torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64)
    if family == "categorical":
        table = TruncatedCategorical(logits=logits, validate_args=False)
    else:
        table = TruncatedMultinomial(2, logits=logits, validate_args=False)
    assert TruncatedPoisson(_f64(3.0), 5).log_pmf.dtype == torch.float64  # what the count families do
    assert table.log_pmf.dtype == torch.float64
    # and the values carry float64 precision (float32 rounding of the logits alone is ~1e-8)
    # (the last outcome is class 3 for the categorical, the count vector (0, 0, 2) for the multinomial)
    expected = torch.softmax(logits, -1)[-1] ** (1 if family == "categorical" else 2)
    torch.testing.assert_close(table.pmf[..., -1].double(), expected, rtol=1e-14, atol=0)


def test_plain_table_with_scalar_outcomes_validates_scalar_values():
    """A table over scalar outcomes has event shape (); log_prob of one value must work when validating."""
    log_pmf = torch.log(torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64))
    table = TruncatedDiscrete(log_pmf, torch.arange(4, dtype=torch.float64))  # default validation
    assert table.event_shape == ()
    torch.testing.assert_close(table.log_prob(torch.tensor(2.0, dtype=torch.float64)), log_pmf[2], rtol=0, atol=1e-15)
