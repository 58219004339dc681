"""Exact sampling: Gumbel-max ``sample()`` of the tables and the Gumbel noise itself.

Covers: ``TruncatedDiscrete.sample`` frequencies match ``pmf`` (chi-square at alpha = 1e-3) for
count families (one- and two-sided windows, batched), the categorical and the multinomial (vector
outcomes); ``sample_gumbel`` has the standard Gumbel mean (Euler-Mascheroni) and variance
(pi^2 / 6) within 4 standard errors and never returns +inf or NaN, even at the extremes of ``rand``.
"""

from __future__ import annotations

import math

import pytest
import torch
from distributions.dist_testing import Z_SE, chi2_critical, chi_square, mean_se, variance_se

from gengs_lightning.distributions import (
    TruncatedBinomial,
    TruncatedCategorical,
    TruncatedGeometric,
    TruncatedMultinomial,
    TruncatedNegativeBinomial,
    TruncatedPoisson,
    sample_gumbel,
    with_samples,
)

EULER_GAMMA = 0.5772156649015329
N_SAMPLES = 100_000


def _f64(*values):
    return torch.tensor(values, dtype=torch.float64)


COUNT_CASES = {
    "poisson-two-sided": lambda p: TruncatedPoisson(p, (1, 8)),
    "geometric-one-sided": lambda p: TruncatedGeometric(probs=p / 10, window=12),
    "negbin-0.5": lambda p: TruncatedNegativeBinomial(0.5, probs=p / 5, window=(0, 6)),
    "binomial-whole": lambda p: TruncatedBinomial(9, probs=p / 5),
}


@pytest.mark.parametrize("case", list(COUNT_CASES))
def test_count_sample_frequencies_match_pmf(case):
    build = COUNT_CASES[case]
    table = build(_f64(1.5, 3.5))
    torch.manual_seed(11)
    x = table.sample((N_SAMPLES,))
    assert x.shape == (N_SAMPLES, 2)
    assert torch.equal(x, x.round())
    low, high = table.window.low, table.window.high
    assert x.min() >= low and x.max() <= high
    wrong = build(_f64(1.5, 3.5) * 1.1).pmf  # a 10% change of the parameter
    for b in range(2):
        counts = torch.bincount(x[:, b].long() - low, minlength=high - low + 1)
        stat, df = chi_square(counts, table.pmf[b])
        assert stat < chi2_critical(df), (b, stat, df)
        stat_wrong, df_wrong = chi_square(counts, wrong[b])  # power of the test
        assert stat_wrong > chi2_critical(df_wrong), (b, stat_wrong)


def _row_index(samples: torch.Tensor, outcomes: torch.Tensor) -> torch.Tensor:
    match = (samples.unsqueeze(-2) == outcomes).all(-1)
    assert (match.sum(-1) == 1).all()  # every sample is exactly one outcome vector
    return match.int().argmax(-1)


def test_multinomial_sample_frequencies_match_pmf(float64_default):
    probs = torch.tensor([0.15, 0.35, 0.5])
    table = TruncatedMultinomial(3, probs=probs)
    torch.manual_seed(12)
    x = table.sample((N_SAMPLES,))
    assert x.shape == (N_SAMPLES, 3)
    assert torch.equal(x.sum(-1), torch.full((N_SAMPLES,), 3.0))
    counts = torch.bincount(_row_index(x, table.outcomes), minlength=table.num_outcomes)
    stat, df = chi_square(counts, table.pmf)
    assert stat < chi2_critical(df), (stat, df)
    wrong = TruncatedMultinomial(3, probs=torch.tensor([0.16, 0.34, 0.5])).pmf
    stat_wrong, df_wrong = chi_square(counts, wrong)
    assert stat_wrong > chi2_critical(df_wrong)
    # the mean count vector is N p within 4 SE
    mean, se = mean_se(x)
    assert ((mean - 3 * probs).abs() <= Z_SE * se).all()


@pytest.mark.parametrize("one_hot", [True, False])
def test_categorical_sample_frequencies_match_pmf(one_hot, float64_default):
    probs = torch.tensor([0.05, 0.2, 0.25, 0.5])
    table = TruncatedCategorical(probs=probs, one_hot=one_hot)
    torch.manual_seed(13)
    x = table.sample((N_SAMPLES,))
    index = _row_index(x, table.outcomes) if one_hot else x.long()
    counts = torch.bincount(index, minlength=4)
    stat, df = chi_square(counts, probs)
    assert stat < chi2_critical(df), (stat, df)
    stat_wrong, df_wrong = chi_square(counts, torch.tensor([0.06, 0.2, 0.25, 0.49]))
    assert stat_wrong > chi2_critical(df_wrong)


# ---------------------------------------------------------------------------------------------------
# 9. sample_gumbel
# ---------------------------------------------------------------------------------------------------
def test_gumbel_mean_and_variance():
    torch.manual_seed(14)
    g = sample_gumbel((1_000_000,), torch.float64, None)
    assert not torch.isnan(g).any() and not torch.isposinf(g).any()
    mean, se = mean_se(g)
    assert abs(mean - EULER_GAMMA) <= Z_SE * se, (mean, se)
    var, se_var = variance_se(g)
    assert abs(var - math.pi**2 / 6) <= Z_SE * se_var, (var, se_var)
    # power: SE(mean) ~ 1.3e-3 and SE(var) ~ 3.5e-3, so a shift of 0.02 in the mean or a 2% error in
    # the variance (both ~ 10 SE) would be rejected
    assert abs(mean - (EULER_GAMMA + 0.02)) > Z_SE * se
    assert abs(var - 1.02 * math.pi**2 / 6) > Z_SE * se_var
    # the upper tail P(g > 5) = 1 - exp(-exp(-5)) (a shape check beyond two moments)
    p = 1 - math.exp(-math.exp(-5.0))
    freq = (g > 5).double().mean()
    assert abs(freq - p) <= Z_SE * math.sqrt(p * (1 - p) / g.numel())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gumbel_shape_dtype_and_never_nan_or_plus_inf(dtype):
    torch.manual_seed(15)
    g = sample_gumbel((4, 500_000), dtype, None)
    assert g.shape == (4, 500_000) and g.dtype == dtype
    assert not torch.isnan(g).any() and not torch.isposinf(g).any()


def test_gumbel_extremes_of_uniform(monkeypatch):
    """``u = 0`` gives -inf (weight 0 in a softmax); the largest ``u < 1`` gives a finite value."""
    for dtype in (torch.float32, torch.float64):
        extremes = torch.tensor(
            [0.0, torch.finfo(dtype).tiny, 0.5, 1.0 - torch.finfo(dtype).eps / 2], dtype=dtype
        )  # 1 - eps/2 is the largest float below one

        def fake_rand(shape, dtype=dtype, device=None, _values=extremes):
            return _values.clone().reshape(shape)

        monkeypatch.setattr(torch, "rand", fake_rand)
        g = sample_gumbel((4,), dtype, None)
        monkeypatch.undo()
        assert g[0] == -math.inf
        assert torch.isfinite(g[1:]).all(), g
        assert not torch.isnan(g).any()
        torch.testing.assert_close(g[2], torch.tensor(-math.log(math.log(2.0)), dtype=dtype))


def test_with_samples_is_a_view_for_one_sample_and_an_expansion_for_more():
    x = torch.randn(3, 4, requires_grad=True)
    one, three = with_samples(x, (1,)), with_samples(x, (3,))
    assert one.shape == (1, 3, 4) and three.shape == (3, 3, 4)
    assert one.data_ptr() == three.data_ptr() == x.data_ptr() and three.stride(0) == 0
    (grad_one,) = torch.autograd.grad(one.sum(), x)
    (grad_three,) = torch.autograd.grad(three.sum(), x)
    assert torch.equal(grad_one, torch.ones(3, 4)) and torch.equal(grad_three, torch.full((3, 4), 3.0))
