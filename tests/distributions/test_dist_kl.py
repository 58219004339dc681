"""Closed-form KL between two tables on one window (journal Proposition 6).

Covers: ``kl_divergence`` equals the brute-force sum for every family; equals a Monte Carlo
estimate ``mean(log p(x) - log q(x))`` over draws of ``p`` within 4 standard errors; ``KL(p, p) = 0``;
``KL >= 0``; ``ValueError`` for different windows / outcome tables; zero-probability entries;
float32 tables whose far tail underflows against float64; float64
``gradcheck`` with respect to both tables (through the family parameters and through raw log-PMFs).
"""

from __future__ import annotations

import math

import pytest
import torch
from distributions.dist_testing import EPS64, Z_SE, mean_se
from torch.autograd import gradcheck
from torch.distributions import kl_divergence

from gengs_lightning.distributions import (
    TruncatedBinomial,
    TruncatedCategorical,
    TruncatedDiscrete,
    TruncatedGeometric,
    TruncatedMultinomial,
    TruncatedNegativeBinomial,
    TruncatedPoisson,
    Window,
    kl_truncated_truncated,
)


def _f64(*values, grad=False):
    return torch.tensor(values, dtype=torch.float64, requires_grad=grad)


PAIRS = {
    "poisson": lambda: (TruncatedPoisson(_f64(2.0, 0.5), 15), TruncatedPoisson(_f64(6.0, 9.0), 15)),
    "poisson-two-sided": lambda: (TruncatedPoisson(_f64(4.0), (2, 9)), TruncatedPoisson(_f64(7.0), (2, 9))),
    "geometric": lambda: (
        TruncatedGeometric(probs=_f64(0.3), window=20),
        TruncatedGeometric(logits=_f64(1.0), window=20),
    ),
    "negbin": lambda: (
        TruncatedNegativeBinomial(0.5, probs=_f64(0.6), window=(1, 12)),
        TruncatedNegativeBinomial(3.0, probs=_f64(0.3), window=(1, 12)),
    ),
    "binomial": lambda: (TruncatedBinomial(10, probs=_f64(0.2, 0.7)), TruncatedBinomial(10, probs=_f64(0.5, 0.1))),
    "categorical": lambda: (
        TruncatedCategorical(probs=_f64(0.1, 0.2, 0.7)),
        TruncatedCategorical(probs=_f64(0.3, 0.3, 0.4)),
    ),
    "multinomial": lambda: (
        TruncatedMultinomial(3, probs=_f64(0.1, 0.2, 0.7)),
        TruncatedMultinomial(3, probs=_f64(0.3, 0.3, 0.4)),
    ),
    "plain-vs-family": lambda: (
        TruncatedDiscrete(_f64(0.0, 1.0, 2.0, 0.5, -1.0, 0.0), torch.arange(2, 8, dtype=torch.float64), Window(2, 7)),
        TruncatedPoisson(_f64(3.0), (2, 7)),
    ),
}


@pytest.mark.parametrize("pair", list(PAIRS))
def test_kl_equals_brute_force_sum(pair, float64_default):
    p, q = PAIRS[pair]()
    kl = kl_divergence(p, q)
    assert kl.dtype == torch.float64
    brute = (p.pmf * (p.pmf.log() - q.pmf.log())).sum(-1)
    scale = 1.0 + (p.log_pmf - q.log_pmf).abs().max().item()
    torch.testing.assert_close(kl, brute, rtol=0, atol=64 * EPS64 * scale)
    assert (kl > 0.01).all()  # distinct distributions: the comparison is not 0 == 0
    assert torch.equal(kl_truncated_truncated(p, q), kl)
    # KL(p, p) is exactly zero, KL(q, q) too
    assert torch.equal(kl_divergence(p, p), torch.zeros(p.batch_shape, dtype=torch.float64))
    assert torch.equal(kl_divergence(q, q), torch.zeros(q.batch_shape, dtype=torch.float64))


def test_kl_matches_monte_carlo():
    p = TruncatedPoisson(_f64(2.0, 5.0), 15)
    q = TruncatedPoisson(_f64(6.0, 4.0), 15)
    torch.manual_seed(21)
    x = p.sample((200_000,))
    d = p.log_prob(x) - q.log_prob(x)
    estimate, se = mean_se(d)
    kl = kl_divergence(p, q)
    assert ((estimate - kl).abs() <= Z_SE * se).all(), (estimate, kl, se)
    # power: the reverse KL (a different number) is rejected by the same criterion
    reverse = kl_divergence(q, p)
    assert ((estimate - reverse).abs() > Z_SE * se).all(), (estimate, reverse, se)


def test_kl_is_non_negative():
    gen = torch.Generator().manual_seed(22)
    logits_p = torch.randn(500, 12, dtype=torch.float64, generator=gen) * 3
    logits_q = torch.randn(500, 12, dtype=torch.float64, generator=gen) * 3
    outcomes = torch.arange(12, dtype=torch.float64)
    p, q = TruncatedDiscrete(logits_p, outcomes, Window(0, 11)), TruncatedDiscrete(logits_q, outcomes, Window(0, 11))
    kl = kl_divergence(p, q)
    assert (kl >= 0).all()
    rates = torch.logspace(-3, 2, 40, dtype=torch.float64)
    kl_rates = kl_divergence(TruncatedPoisson(rates, (0, 30)), TruncatedPoisson(rates.flip(0), (0, 30)))
    assert (kl_rates >= 0).all()


def test_kl_raises_for_different_outcomes():
    with pytest.raises(ValueError, match="window"):
        kl_divergence(TruncatedPoisson(_f64(2.0), 10), TruncatedPoisson(_f64(2.0), 11))
    with pytest.raises(ValueError):
        kl_divergence(TruncatedPoisson(_f64(2.0), (0, 9)), TruncatedPoisson(_f64(2.0), (1, 10)))
    with pytest.raises(ValueError):
        kl_divergence(TruncatedPoisson(_f64(2.0), 10), TruncatedGeometric(probs=_f64(0.5), window=(1, 10)))
    with pytest.raises(ValueError):
        kl_divergence(TruncatedCategorical(probs=_f64(0.5, 0.5)), TruncatedCategorical(probs=_f64(0.2, 0.3, 0.5)))
    # same window, different families: allowed (both are tables on [0, 9])
    assert torch.isfinite(
        kl_divergence(TruncatedPoisson(_f64(2.0), 10), TruncatedGeometric(probs=_f64(0.5), window=10))
    )


def test_kl_with_zero_probability_entries():
    """Terms with ``pi^p_k = 0`` contribute 0 (and no NaN), whatever ``q`` says there."""
    log_p = torch.log(_f64(0.0, 0.5, 0.5, 0.0)).requires_grad_()
    log_q = torch.log(_f64(0.0, 0.25, 0.25, 0.5)).requires_grad_()
    outcomes = torch.arange(4, dtype=torch.float64)
    p = TruncatedDiscrete(log_p, outcomes, Window(0, 3), normalized=True)
    q = TruncatedDiscrete(log_q, outcomes, Window(0, 3), normalized=True)
    kl = kl_divergence(p, q)
    torch.testing.assert_close(kl, torch.tensor(0.6931471805599453, dtype=torch.float64), rtol=0, atol=1e-15)
    grad_p, grad_q = torch.autograd.grad(kl, (log_p, log_q))
    assert torch.isfinite(grad_p).all() and torch.isfinite(grad_q).all()
    assert grad_p[0] == 0 and grad_p[3] == 0 and grad_q[0] == 0 and grad_q[3] == 0
    # q = 0 where p > 0: infinite KL
    assert kl_divergence(q, p) == float("inf")


def test_float32_kl_of_a_wide_table_matches_float64():
    """A float32 table whose far tail underflows (log-PMF down to -815) gives the float64 KL and gradients.

    The terms below ``e`` times float32's smallest normal number are dropped (journal Proposition 6 sums
    them, but each is under 1e-35): the value must still agree with the float64 sum to float32 precision,
    and the dropped entries get an exact zero gradient.
    """
    outcomes = torch.arange(100, dtype=torch.float64)
    rates = _f64(0.01, 3.0, 25.0, 60.0)
    p64 = TruncatedPoisson(rates, (0, 99))
    q64 = TruncatedPoisson(_f64(25.0), (0, 99))
    lp32 = p64.log_pmf.float().requires_grad_()
    lq32 = q64.log_pmf.float().requires_grad_()
    lp64 = lp32.detach().double().requires_grad_()
    lq64 = lq32.detach().double().requires_grad_()
    assert (lp32 < -87.3).any() and (lp32 < -700).any()  # the case: subnormal and zero exp in float32

    def kl(lp, lq):
        window, values = Window(0, 99), outcomes.to(lp)
        p, q = (TruncatedDiscrete(table, values, window, normalized=True) for table in (lp, lq))
        return kl_divergence(p, q)

    kl32, kl64 = kl(lp32, lq32), kl(lp64, lq64)
    eps32 = torch.finfo(torch.float32).eps
    # float32 rounding of ~100 terms of size <= max|p log(p/q)|, far above the dropped terms' 1e-35
    tolerance = 100 * eps32 * (lp64.exp() * (lp64 - lq64).abs()).sum(-1).detach()
    torch.testing.assert_close(kl32.double(), kl64.detach(), rtol=0, atol=tolerance.max().item())
    grad32 = torch.autograd.grad(kl32.sum(), (lp32, lq32))
    grad64 = torch.autograd.grad(kl64.sum(), (lp64, lq64))
    # float32 rounding relative to the terms a gradient row sums: p_k (|log p_k - log q_k| + 1) for log p,
    # p_k summed over the batch for the broadcast log q
    terms = (lp64.exp() * ((lp64 - lq64).abs() + 1)).detach()
    scales = terms.amax(-1, keepdim=True), terms.sum(0, keepdim=True).amax(-1, keepdim=True)
    for g32, g64, scale in zip(grad32, grad64, scales, strict=True):
        assert ((g32.double() - g64).abs() <= 100 * eps32 * scale).all()
    dropped = lp32.detach() < math.log(torch.finfo(torch.float32).tiny) + 1.0
    assert dropped.any() and (grad32[0][dropped] == 0).all()


def test_kl_gradcheck_through_family_parameters():
    def kl(rate_p, logits_q):
        return kl_divergence(
            TruncatedPoisson(rate_p, (1, 14)), TruncatedNegativeBinomial(2.0, logits=logits_q, window=(1, 14))
        )

    rate_p = _f64(0.8, 3.0, 9.0, grad=True)
    logits_q = _f64(-1.0, 0.3, 1.2, grad=True)
    assert gradcheck(kl, (rate_p, logits_q), eps=1e-6, atol=1e-7, rtol=1e-5)


def test_kl_gradcheck_through_raw_log_pmfs():
    """The closed-form backward of the KL with respect to both log-PMF tensors."""
    gen = torch.Generator().manual_seed(23)
    log_p = torch.randn(3, 7, dtype=torch.float64, generator=gen).requires_grad_()
    log_q = torch.randn(3, 7, dtype=torch.float64, generator=gen).requires_grad_()
    log_q_broadcast = torch.randn(7, dtype=torch.float64, generator=gen).requires_grad_()
    outcomes = torch.arange(7, dtype=torch.float64)

    def kl(lp, lq):
        return kl_divergence(
            TruncatedDiscrete(lp, outcomes, Window(0, 6)), TruncatedDiscrete(lq, outcomes, Window(0, 6))
        )

    assert gradcheck(kl, (log_p, log_q), eps=1e-6, atol=1e-7, rtol=1e-5)
    assert gradcheck(kl, (log_p, log_q_broadcast), eps=1e-6, atol=1e-7, rtol=1e-5)

    def raw(lp, lq):  # the unnormalised inputs straight into the fused Function
        p = TruncatedDiscrete(lp, outcomes, Window(0, 6), normalized=True)
        q = TruncatedDiscrete(lq, outcomes, Window(0, 6), normalized=True)
        return kl_divergence(p, q)

    assert gradcheck(raw, (log_p, log_q), eps=1e-6, atol=1e-7, rtol=1e-5)
