"""Nonparametric truncation: ``quantile_window`` (journal Algorithm 2).

Covers: the chosen window leaves at most ``eps`` outside (``tail_mass`` of the table built on it) and
is minimal (one outcome less on a side leaves more than that side's allowance for some batch member),
one- and two-sided, several families, batches and ``eps``; agreement with a brute-force quantile; the
``max_size`` cap; argument errors.
"""

from __future__ import annotations

from itertools import pairwise

import pytest
import torch
from distributions.dist_testing import EPS64
from torch.distributions import Geometric, NegativeBinomial, Poisson

from gengs_lightning.distributions import (
    TruncatedBinomial,
    TruncatedGeometric,
    TruncatedNegativeBinomial,
    TruncatedPoisson,
    Window,
    quantile_window,
)


def _f64(*values):
    return torch.tensor(values, dtype=torch.float64)


# (family, params, torch distribution for the brute force)
CASES = {
    "poisson": (TruncatedPoisson, {"rate": _f64(0.3, 4.0, 40.0)}, lambda: Poisson(_f64(0.3, 4.0, 40.0))),
    "poisson-single": (TruncatedPoisson, {"rate": _f64(7.0)}, lambda: Poisson(_f64(7.0))),
    "geometric": (TruncatedGeometric, {"logits": _f64(-2.0, 0.0)}, lambda: Geometric(logits=_f64(-2.0, 0.0))),
    "negbin-0.5": (
        TruncatedNegativeBinomial,
        {"total_count": torch.tensor(0.5, dtype=torch.float64), "logits": _f64(-1.0, 1.0)},
        lambda: NegativeBinomial(torch.tensor(0.5, dtype=torch.float64), logits=_f64(-1.0, 1.0)),
    ),
    "negbin-3": (
        TruncatedNegativeBinomial,
        {"total_count": torch.tensor(3.0, dtype=torch.float64), "logits": _f64(0.5)},
        lambda: NegativeBinomial(torch.tensor(3.0, dtype=torch.float64), logits=_f64(0.5)),
    ),
}
EPSILONS = [1e-2, 1e-3, 1e-6, 1e-9]
SLACK = 64 * EPS64  # tail_mass and the quantile search sum the same terms in a different order


def _side_masses(dist, size=4000):
    """``P(X < k)`` and ``P(X > k)`` for ``k = 0 .. size - 1`` per batch member, by direct sums."""
    k = torch.arange(size, dtype=torch.float64)
    p = dist.log_prob(k.unsqueeze(-1)).T.exp()  # (batch, size)
    below = torch.cumsum(p, -1) - p
    above = p.flip(-1).cumsum(-1).flip(-1) - p
    return below, above


@pytest.mark.parametrize("eps", EPSILONS)
@pytest.mark.parametrize("case", list(CASES))
def test_one_sided_window_holds_mass_and_is_minimal(case, eps):
    family, params, dist = CASES[case]
    window = quantile_window(family, params, eps, max_size=4000)
    assert window.low == 0
    table = family(**params, window=window)
    assert (table.tail_mass <= eps + SLACK).all(), (window, table.tail_mass)
    if window.high > 0:
        smaller = family(**params, window=Window(0, window.high - 1))
        assert (smaller.tail_mass > eps).any(), (window, smaller.tail_mass)
    # brute force: the smallest b with P(X > b) <= eps for every member
    _, above = _side_masses(dist())
    expected = int((above > eps).sum(-1).max())
    assert window.high == expected


@pytest.mark.parametrize("eps", EPSILONS)
@pytest.mark.parametrize("case", list(CASES))
def test_two_sided_window_holds_mass_and_is_minimal(case, eps):
    family, params, dist = CASES[case]
    window = quantile_window(family, params, eps, max_size=4000, two_sided=True)
    table = family(**params, window=window)
    assert (table.tail_mass <= eps + SLACK).all(), (window, table.tail_mass)
    below, above = _side_masses(dist())
    a, b = window.low, window.high
    assert (below[:, a] <= eps / 2 + SLACK).all() and (above[:, b] <= eps / 2 + SLACK).all()
    # minimal on each side: moving either edge inwards leaves more than eps / 2 on that side
    assert (below[:, a + 1] > eps / 2).any(), (window, below[:, a + 1])
    if b > 0:
        assert (above[:, b - 1] > eps / 2).any(), (window, above[:, b - 1])
    one_sided = quantile_window(family, params, eps, max_size=4000)
    assert b >= one_sided.high  # each side may only keep eps / 2


def test_larger_eps_gives_nested_smaller_windows():
    params = {"rate": _f64(3.0, 12.0)}
    windows = [quantile_window(TruncatedPoisson, params, eps, 1000, two_sided=True) for eps in (1e-9, 1e-6, 1e-3, 0.1)]
    for wide, narrow in pairwise(windows):
        assert wide.low <= narrow.low and narrow.high <= wide.high
    assert windows[0].size > windows[-1].size


def test_binomial_quantile_window_stays_in_support():
    params = {"total_count": 20, "logits": _f64(-1.0, 2.0)}
    window = quantile_window(TruncatedBinomial, params, 1e-6, max_size=100)
    assert window.high <= 20
    assert (TruncatedBinomial(**params, window=window).tail_mass <= 1e-6 + SLACK).all()


def test_max_size_caps_the_window():
    window = quantile_window(TruncatedPoisson, {"rate": _f64(1000.0)}, 1e-6, max_size=50)
    assert window == Window(0, 49)
    two = quantile_window(TruncatedPoisson, {"rate": _f64(1000.0)}, 1e-6, max_size=50, two_sided=True)
    assert two.high <= 49 and two.size <= 50
    capped = quantile_window(TruncatedPoisson, {"rate": _f64(3.0, 7.0)}, 1e-6, max_size=8)
    assert capped == Window(0, 7)
    # the cap binds: more than eps is left outside, which tail_mass reports
    assert (TruncatedPoisson(_f64(3.0, 7.0), capped).tail_mass > 1e-6).all()
    assert quantile_window(TruncatedPoisson, {"rate": _f64(3.0)}, 1e-6, max_size=1) == Window(0, 0)


@pytest.mark.parametrize("eps", [0.0, 1.0, -0.1, 1.5, float("nan"), "0.1", None])
def test_invalid_eps_raises(eps):
    with pytest.raises(ValueError, match="eps"):
        quantile_window(TruncatedPoisson, {"rate": _f64(3.0)}, eps, max_size=100)


def test_invalid_max_size_raises():
    with pytest.raises(ValueError, match="max_size"):
        quantile_window(TruncatedPoisson, {"rate": _f64(3.0)}, 1e-3, max_size=0)


def test_float_total_count_is_accepted():
    """Bug (see the report): ``params`` is documented as ``Tensor | float``, and ``Prior`` passes its
    structural ``total_count`` as the config's float, but ``base_measure`` calls ``torch.lgamma`` on it."""
    params = {"total_count": 3.0, "logits": _f64(0.5)}
    tensor_params = {"total_count": torch.tensor(3.0, dtype=torch.float64), "logits": _f64(0.5)}
    expected = quantile_window(TruncatedNegativeBinomial, tensor_params, 1e-6, max_size=1000)
    assert quantile_window(TruncatedNegativeBinomial, params, 1e-6, max_size=1000) == expected
