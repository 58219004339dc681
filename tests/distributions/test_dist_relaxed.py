"""The relaxed GenGS sample: Theorem 4 (NeurIPS) and the functional core ``relaxed_outcome``.

Covers: as ``tau -> 0`` the relaxed sample's mean and variance approach the truncated table's (Monte
Carlo, tolerances from the standard errors, common random numbers across temperatures); hard
(straight-through) samples are exact draws of the table (chi-square); ``relaxed_outcome``'s closed-form
backward (gradcheck in logits and tau, scalar and vector outcomes), its reduction to Gumbel-Softmax
for one-hot outcomes, the straight-through forward value and gradient; ``GenGS`` shapes and errors.
"""

from __future__ import annotations

import math

import pytest
import torch
from distributions.dist_testing import Z_SE, chi2_critical, chi_square, mean_se, variance_se
from torch.autograd import gradcheck

from gengs_lightning.distributions import (
    GenGS,
    TruncatedMultinomial,
    TruncatedPoisson,
    relaxed_outcome,
    sample_gumbel,
)

N_THEOREM4 = 200_000
TAUS = [1.0, 0.1, 0.01, 0.001]


@pytest.fixture(scope="module")
def theorem4_samples():
    """Poisson(7) on [0, 24]: soft samples at every tau and hard samples, all from the same noise."""
    table = TruncatedPoisson(torch.tensor(7.0, dtype=torch.float64), 25)
    soft = {}
    for tau in TAUS:
        torch.manual_seed(2024)
        soft[tau] = GenGS(table, tau).rsample((N_THEOREM4,))
    torch.manual_seed(2024)
    hard = GenGS(table, 0.5, hard=True).rsample((N_THEOREM4,))
    return table, soft, hard


def test_hard_samples_are_exact_draws_of_the_table(theorem4_samples):
    table, _, hard = theorem4_samples
    assert torch.equal(hard, hard.round())
    assert hard.min() >= 0 and hard.max() <= 24
    counts = torch.bincount(hard.long(), minlength=25)
    stat, df = chi_square(counts, table.pmf)
    assert stat < chi2_critical(df), (stat, df)
    # power: the table of Poisson(7.1) is rejected by the same test on the same samples
    wrong = TruncatedPoisson(torch.tensor(7.1, dtype=torch.float64), 25).pmf
    stat_wrong, df_wrong = chi_square(counts, wrong)
    assert stat_wrong > chi2_critical(df_wrong)
    mean, se = mean_se(hard)
    assert abs(mean - table.mean) <= Z_SE * se
    var, se_var = variance_se(hard)
    assert abs(var - table.variance) <= Z_SE * se_var


def test_theorem4_moments_converge_as_tau_vanishes(theorem4_samples):
    table, soft, hard = theorem4_samples
    for tau in TAUS:
        z = soft[tau]
        assert z.min() >= 0 and z.max() <= 24 + 1e-9
        assert not torch.equal(z, z.round())  # relaxed, not discrete

    # Mean: at tau <= 0.01 within 4 standard errors of the table's mean.
    for tau in (0.01, 0.001):
        mean, se = mean_se(soft[tau])
        assert abs(mean - table.mean) <= Z_SE * se, (tau, mean, table.mean, se)
    # Variance: the relaxation shrinks it by about 7 tau here (an O(tau) bias, ~3 SE at tau = 0.01 and
    # N = 2e5, so a 4-SE check there would be a coin toss); at tau = 1e-3 the bias is ~0.3 SE.
    var, se_var = variance_se(soft[0.001])
    assert abs(var - table.variance) <= Z_SE * se_var, (var, table.variance, se_var)
    # power: at tau = 1 the same criteria reject the relaxed moments
    mean, se = mean_se(soft[1.0])
    var, se_var = variance_se(soft[1.0])
    assert abs(mean - table.mean) > Z_SE * se and abs(var - table.variance) > Z_SE * se_var

    # Convergence, measured against the hard draws of the same noise (paired, so the Monte Carlo
    # error of the discrete draws cancels): D(tau) = Var(z_tau) - Var(x) and E|z_tau - x|.
    discrepancy, se_discrepancy, distance = [], [], []
    for tau in TAUS:
        u, s = soft[tau] - hard, soft[tau] + hard
        d = (u * s).mean() - u.mean() * s.mean()
        influence = u * s - u.mean() * s - s.mean() * u  # delta-method influence of D
        discrepancy.append(d.abs().item())
        se_discrepancy.append(influence.std().item() / math.sqrt(N_THEOREM4))
        distance.append(u.abs().mean().item())
    for i in range(len(TAUS) - 1):
        # strictly smaller, by more than the Monte Carlo error of both estimates
        assert discrepancy[i] - discrepancy[i + 1] > Z_SE * (se_discrepancy[i] + se_discrepancy[i + 1]), (
            discrepancy,
            se_discrepancy,
        )
        assert distance[i + 1] < distance[i]
    # and the unpaired absolute variance discrepancy decreases too (from tau = 1 to 0.01)
    unpaired = [abs(variance_se(soft[tau])[0] - table.variance).item() for tau in TAUS[:3]]
    assert unpaired[0] > unpaired[1] > unpaired[2], unpaired
    assert distance[-1] < 0.01


def test_multinomial_relaxed_mean_converges(float64_default):
    """Vector outcomes: the relaxed count vector's mean approaches N p (NeurIPS Appendix E)."""
    probs = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    table = TruncatedMultinomial(3, probs=probs)
    torch.manual_seed(7)
    z = GenGS(table, 0.01).rsample((100_000,)).double()
    assert z.shape == (100_000, 3)
    torch.testing.assert_close(z.sum(-1), torch.full((100_000,), 3.0, dtype=torch.float64), rtol=0, atol=1e-5)
    mean, se = mean_se(z)
    assert ((mean - 3 * probs).abs() <= Z_SE * se).all(), (mean, se)


# ---------------------------------------------------------------------------------------------------
# 8. relaxed_outcome
# ---------------------------------------------------------------------------------------------------
def _noise(shape, seed=0):
    torch.manual_seed(seed)
    return sample_gumbel(shape, torch.float64, None)


@pytest.mark.parametrize("tau_kind", ["scalar", "batch"])
@pytest.mark.parametrize("outcome_kind", ["scalar", "vector"])
def test_relaxed_outcome_gradcheck(outcome_kind, tau_kind):
    n = 6
    if outcome_kind == "scalar":
        outcomes = torch.arange(2, 2 + n, dtype=torch.float64)
    else:
        outcomes = TruncatedMultinomial(2, probs=torch.tensor([0.2, 0.3, 0.5])).outcomes.double()  # (6, 3)
    logits = torch.randn(4, n, dtype=torch.float64, generator=torch.Generator().manual_seed(3)).requires_grad_()
    if tau_kind == "scalar":
        tau = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    else:
        tau = torch.tensor([0.2, 0.5, 1.0, 3.0], dtype=torch.float64, requires_grad=True)
    gumbel = _noise((4, n))
    saved = gumbel.clone()

    def f(logits, tau):
        return relaxed_outcome(logits, outcomes, tau, gumbel=gumbel)

    assert gradcheck(f, (logits, tau), eps=1e-6, atol=1e-7, rtol=1e-5)
    assert torch.equal(gumbel, saved)  # the caller's noise is not overwritten
    # straight-through: the hard sample has exactly the soft sample's gradient
    soft = relaxed_outcome(logits, outcomes, tau, gumbel=gumbel)
    hard = relaxed_outcome(logits, outcomes, tau, hard=True, gumbel=gumbel)
    weight = torch.randn(soft.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    g_soft = torch.autograd.grad((soft * weight).sum(), (logits, tau))
    g_hard = torch.autograd.grad((hard * weight).sum(), (logits, tau))
    for a, b in zip(g_soft, g_hard, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_relaxed_outcome_gradcheck_detects_a_wrong_temperature_gradient():
    """Power of the gradcheck above: dropping the tau dependence in one place is caught."""
    outcomes = torch.arange(5, dtype=torch.float64)
    logits = torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(5)).requires_grad_()
    tau = torch.tensor(0.6, dtype=torch.float64, requires_grad=True)
    gumbel = _noise((3, 5))

    def wrong(logits, tau):  # the temperature gradient is cut
        return relaxed_outcome(logits, outcomes, tau.detach() + 0 * tau, gumbel=gumbel)

    assert not gradcheck(wrong, (logits, tau), eps=1e-6, atol=1e-7, rtol=1e-5, raise_exception=False)


@pytest.mark.parametrize("tau", [0.05, 0.5, 2.0])
def test_one_hot_outcomes_reduce_to_gumbel_softmax(tau):
    logits = torch.randn(8, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    gumbel = _noise((8, 5), seed=1)
    z = relaxed_outcome(logits, torch.eye(5, dtype=torch.float64), tau, gumbel=gumbel)
    assert torch.equal(z, torch.softmax((logits + gumbel) / tau, dim=-1))
    # and it is a different value than with another temperature (the check is not vacuous)
    assert not torch.equal(z, torch.softmax((logits + gumbel) / (2 * tau), dim=-1))


@pytest.mark.parametrize("outcome_kind", ["scalar", "vector"])
def test_hard_forward_is_outcome_at_argmax(outcome_kind):
    logits = torch.randn(1000, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    gumbel = _noise((1000, 6), seed=2)
    if outcome_kind == "scalar":
        outcomes = torch.tensor([0.0, 1.0, 2.0, 5.0, 7.0, 9.0], dtype=torch.float64)
    else:
        outcomes = TruncatedMultinomial(2, probs=torch.tensor([0.2, 0.3, 0.5])).outcomes.double()
    for tau in (0.01, 1.0, 10.0):
        z = relaxed_outcome(logits, outcomes, tau, hard=True, gumbel=gumbel)
        assert torch.equal(z, outcomes[(logits + gumbel).argmax(-1)])


def test_relaxed_outcome_with_minus_infinite_noise_is_finite():
    """``sample_gumbel`` may return -inf (u = 0): that category gets weight 0, no NaN anywhere."""
    logits = torch.zeros(2, 4, dtype=torch.float64, requires_grad=True)
    tau = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    gumbel = torch.tensor([[-math.inf, 0.1, 0.2, 0.3], [0.0, -math.inf, -math.inf, 1.0]], dtype=torch.float64)
    z = relaxed_outcome(logits, torch.arange(4, dtype=torch.float64), tau, gumbel=gumbel)
    grads = torch.autograd.grad(z.sum(), (logits, tau))
    assert torch.isfinite(z).all() and all(torch.isfinite(g).all() for g in grads)


def test_gengs_shapes_and_errors():
    table = TruncatedPoisson(torch.tensor([1.0, 4.0, 9.0]), (1, 10))
    gengs = GenGS(table, torch.tensor([0.5, 1.0, 2.0]))
    assert gengs.rsample((7, 2)).shape == (7, 2, 3)
    assert gengs.expand((4, 3)).rsample((5,)).shape == (5, 4, 3)
    multi = GenGS(TruncatedMultinomial(3, probs=torch.tensor([[0.2, 0.8], [0.6, 0.4]])), 0.3)
    assert multi.rsample((5,)).shape == (5, 2, 2)
    assert multi.event_shape == (2,)
    with pytest.raises(NotImplementedError):
        gengs.log_prob(torch.ones(3))
    with pytest.raises(ValueError):
        GenGS(table, -1.0, validate_args=True)
