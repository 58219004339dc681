"""Gradients of the tables and of the relaxed sample.

Covers: finite float32 values and gradients for Poisson rates 1e-6 .. 1e4 and temperatures
0.01 .. 10 (the range the package documents); float64 ``gradcheck`` of the folded log-PMF with
respect to each count family's parameter (the closed-form backward of ``grid.folded_table``),
including the direct-sum branch of a deep upper tail; an end-to-end ``gradcheck`` of
``GenGS.rsample`` with respect to the rate and the temperature under fixed noise.
"""

from __future__ import annotations

import pytest
import torch
from distributions.dist_testing import EPS32, EPS64
from torch.autograd import gradcheck
from torch.distributions import Poisson

from gengs_lightning.distributions import (
    GenGS,
    TruncatedBinomial,
    TruncatedGeometric,
    TruncatedNegativeBinomial,
    TruncatedPoisson,
)
from gengs_lightning.distributions.grid import SERIES_THRESHOLD

RATES = torch.logspace(-6, 4, 21)
TAUS = [0.01, 0.1, 1.0, 10.0]


# ---------------------------------------------------------------------------------------------------
# 3a. float32: finite values and gradients over the documented range
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("hard", [False, True], ids=["soft", "hard"])
@pytest.mark.parametrize("window", [30, (9900, 10100)], ids=str)
def test_float32_finite_over_rate_and_temperature_range(window, hard):
    torch.manual_seed(0)
    for tau in TAUS:
        rate = RATES.clone().requires_grad_(True)
        table = TruncatedPoisson(rate, window)
        assert table.log_pmf.dtype == torch.float32
        assert torch.isfinite(table.log_pmf).all(), (tau, table.log_pmf)
        assert torch.isfinite(table.tail_mass).all()
        z = GenGS(table, tau, hard=hard).rsample((64,))
        assert z.shape == (64, RATES.numel())
        assert torch.isfinite(z).all()
        # a convex combination of the outcomes, up to float32 rounding of the weights' sum
        slack = 0.0 if hard else table.window.high * table.num_outcomes * EPS32
        assert (z >= table.window.low - slack).all() and (z <= table.window.high + slack).all()
        # a loss through the relaxed sample and through the table (like a KL term)
        loss = z.sum() + (table.pmf * table.log_pmf).sum()
        (grad,) = torch.autograd.grad(loss, rate)
        assert torch.isfinite(grad).all(), (window, tau, grad)
    # the gradient is informative, not silently zero, where the rate sits inside the window
    inside = (RATES > 0.5) & (RATES < 20) if window == 30 else (RATES > 9000)
    assert (grad[inside] != 0).all()


def test_float32_table_gradient_matches_float64():
    """The float32 table is computed in float64 and cast: its gradient agrees to float32 precision."""
    weights = torch.randn(4, 25, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    grads = {}
    for dtype in (torch.float32, torch.float64):
        rate = torch.tensor([1e-6, 0.5, 7.0, 1e4], dtype=dtype, requires_grad=True)
        log_pmf = TruncatedPoisson(rate, (3, 27)).log_pmf
        (grads[dtype],) = torch.autograd.grad((log_pmf.double() * weights).sum(), rate)
    torch.testing.assert_close(grads[torch.float32].double(), grads[torch.float64], rtol=1e-5, atol=0)


# ---------------------------------------------------------------------------------------------------
# 3b. float64 gradcheck of the folded log-PMF
# ---------------------------------------------------------------------------------------------------
def _f64(*values):
    return torch.tensor(values, dtype=torch.float64, requires_grad=True)


GRADCHECK_CASES = {
    "poisson-one-sided": (lambda r: TruncatedPoisson(r, 8), _f64(0.7, 3.0, 12.0)),
    "poisson-two-sided": (lambda r: TruncatedPoisson(r, (2, 10)), _f64(1.5, 3.0, 12.0)),
    "poisson-size2": (lambda r: TruncatedPoisson(r, (5, 6)), _f64(0.7, 5.5, 12.0)),
    "poisson-deep-tail-series": (lambda r: TruncatedPoisson(r, 40), _f64(0.5, 2.0)),
    "geometric-probs": (lambda p: TruncatedGeometric(probs=p, window=10), _f64(0.2, 0.6)),
    "geometric-logits-two-sided": (lambda x: TruncatedGeometric(logits=x, window=(2, 9)), _f64(-1.5, 0.0, 1.0)),
    "geometric-deep-tail-series": (lambda p: TruncatedGeometric(probs=p, window=60), _f64(0.4, 0.7)),
    "negbin-0.5": (lambda x: TruncatedNegativeBinomial(0.5, logits=x, window=10), _f64(-1.0, 0.5)),
    "negbin-3-two-sided": (lambda x: TruncatedNegativeBinomial(3.0, logits=x, window=(2, 12)), _f64(-1.0, 0.5)),
    "negbin-3-probs": (lambda p: TruncatedNegativeBinomial(3.0, probs=p, window=15), _f64(0.3, 0.6)),
    "binomial-whole": (lambda x: TruncatedBinomial(12, logits=x), _f64(-0.5, 0.3, 2.0)),
    "binomial-two-sided": (lambda x: TruncatedBinomial(12, logits=x, window=(2, 9)), _f64(-1.0, 0.3, 2.0)),
    "binomial-one-sided-probs": (lambda p: TruncatedBinomial(12, probs=p, window=5), _f64(0.2, 0.5)),
}


@pytest.mark.parametrize("case", list(GRADCHECK_CASES))
def test_log_pmf_gradcheck(case):
    build, param = GRADCHECK_CASES[case]
    # Finite differences of log P(X >= b) are only reliable where that mass is either large (> 1e-6)
    # or computed without the complement (< SERIES_THRESHOLD): a complement 1 - P(X < b) of a small
    # tail carries an absolute rounding error of ~1e-16, i.e. a relative error 1e-16 / P(X >= b) that
    # eps = 1e-6 amplifies (the analytical gradient is right there, see
    # test_edge_gradients_are_conditional_means).
    upper = build(param.detach()).pmf[..., -1]
    assert ((upper > 1e-6) | (upper < SERIES_THRESHOLD / 10)).all(), upper
    assert gradcheck(lambda p: build(p).log_pmf, (param,), eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize(
    ("rate", "window"),
    [(0.7, (2, 10)), (0.3, 8), (3.0, 13), (12.0, (4, 20)), (0.5, 40), (50.0, (30, 75))],
    ids=str,
)
def test_edge_gradients_are_conditional_means(rate, window):
    """``d log pi_a / d rate = (E[X | X <= a] - rate) / rate`` and likewise for ``pi_b`` with ``X >= b``.

    Checked against brute-force conditional means in every regime of the upper edge: large tail,
    complement, series with a remainder bracket and continued fraction.
    """
    r = torch.tensor(rate, dtype=torch.float64, requires_grad=True)
    table = TruncatedPoisson(r, window)
    low, high = table.window.low, table.window.high
    grad_low, grad_high = (torch.autograd.grad(table.log_pmf[i], r, retain_graph=True)[0] for i in (0, -1))
    k = torch.arange(high + 400, dtype=torch.float64)
    p = Poisson(r.detach()).log_prob(k).exp()
    head, tail = k <= low, k >= high
    mean_low = (p[head] * k[head]).sum() / p[head].sum()
    mean_high = (p[tail] * k[tail]).sum() / p[tail].sum()
    # the package's complement mean (mean - P(X<b) E[X|X<b]) / P(X>=b) cancels: relative error
    # ~ eps * rate / (P(X >= b) E[X | X >= b]); 64 ulps of margin on both edges
    rtol_high = 64 * EPS64 * max(1.0, rate / (p[tail].sum().item() * mean_high.item()))
    torch.testing.assert_close(grad_low, (mean_low - rate) / rate, rtol=64 * EPS64, atol=64 * EPS64)
    torch.testing.assert_close(grad_high, (mean_high - rate) / rate, rtol=rtol_high, atol=64 * EPS64)


def test_log_pmf_gradcheck_detects_a_wrong_gradient():
    """The gradcheck above has power: a table whose edge gradient is dropped is rejected."""

    def wrong(rate):  # the folded upper edge detached: its true derivative is missing
        log_pmf = TruncatedPoisson(rate, 8).log_pmf
        return torch.cat([log_pmf[..., :-1], log_pmf[..., -1:].detach()], dim=-1)

    assert not gradcheck(wrong, (_f64(3.0, 12.0),), eps=1e-6, atol=1e-7, rtol=1e-5, raise_exception=False)


def test_relaxed_sample_gradcheck_end_to_end():
    """``rate -> table -> GenGS.rsample`` with the noise fixed by the seed, and ``tau`` differentiable."""

    def sample(rate, tau):
        torch.manual_seed(123)
        return GenGS(TruncatedPoisson(rate, (1, 12)), tau).rsample((5,))

    rate = _f64(0.8, 4.0, 9.0)
    tau = torch.tensor([0.3, 0.7, 1.5], dtype=torch.float64, requires_grad=True)
    assert gradcheck(sample, (rate, tau), eps=1e-6, atol=1e-7, rtol=1e-5)
    hard = GenGS(TruncatedPoisson(rate, (1, 12)), tau, hard=True)
    torch.manual_seed(0)
    z = hard.rsample((3,))
    assert torch.equal(z, z.round())
    (grad,) = torch.autograd.grad(z.sum(), rate)
    assert torch.isfinite(grad).all() and (grad != 0).any()


def test_negative_binomial_total_count_is_structural_and_refuses_gradients():
    """``total_count`` is fixed by the prior; asking for its gradient is an error, not a silent zero."""
    logits = torch.tensor([-1.0, 0.5], dtype=torch.float64)
    total_count = torch.tensor(2.5, dtype=torch.float64, requires_grad=True)
    with pytest.raises(ValueError, match="total_count of the negative binomial is structural"):
        TruncatedNegativeBinomial(total_count, logits=logits, window=10)
    table = TruncatedNegativeBinomial(total_count.detach(), logits=logits, window=10)
    assert torch.isfinite(table.log_pmf).all()


def test_tables_built_under_inference_mode_do_not_break_later_training():
    """Regression: the CPU scratch grid created under ``torch.inference_mode`` (Lightning's test loop)."""
    with torch.inference_mode():
        TruncatedPoisson(torch.full((500,), 2.0), 30)
    rate = torch.full((600,), 2.0, requires_grad=True)
    TruncatedPoisson(rate, 30).log_pmf[:, -1].sum().backward()
    assert torch.isfinite(rate.grad).all()
