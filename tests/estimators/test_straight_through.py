"""ReinMax, Gapped ST and Gumbel-Rao: the differential test against the ``reinmax`` package, bias and variance on the toy
families against the exact gradient, and Gumbel-Rao's variance against ST-GS's.

Every Monte Carlo tolerance is a multiple of a standard error estimated from the same draws; the
differential test's tolerance is a float32 rounding bound. Fixed seeds throughout.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from estimators.estimator_testing import U32, U64, linear_objective, make_prior, quadratic_objective, random_params

from gengs_lightning.distributions import floor_log_pmf
from gengs_lightning.estimators import GappedStraightThrough, GenGSStraightThrough, GumbelRao, ReinMax
from gengs_lightning.estimators.straight_through import gapped_logits

reinmax_package = pytest.importorskip("reinmax")

#: The toy task's four families (NeurIPS Section 6.1), with the windows of the estimator tests.
TOY = {"poisson": 8, "binomial": 12, "negative_binomial": 10, "multinomial": None}
DRAWS = 4000
#: The variance comparisons resolve differences of variances, which need more draws.
VARIANCE_DRAWS = 40000


# --------------------------------------------------------------------------------------------------
# Differential test against the reference implementation
# --------------------------------------------------------------------------------------------------

REFERENCE_CASES = [
    ("categorical", None, True),
    ("categorical", None, False),
    ("poisson", 8, True),
    ("poisson", 8, False),
    ("poisson", (1, 7), False),
    ("binomial", 12, False),
]


@pytest.mark.parametrize("tau", [1.0, 2.5])
@pytest.mark.parametrize(("family", "window", "implicit"), REFERENCE_CASES)
def test_reinmax_equals_the_reference_package(family, window, implicit, tau):
    """Same logits, tau and random state: the same sample and (to float32 rounding) the same gradient.

    The reference ``reinmax(theta, tau)`` runs on the window's table ``theta = log pi`` (for a categorical
    prior the categorical itself; for a count window, the window's categorical representation), its one-hot
    draw mapped to values by ``D @ c``; the count windows reduce to it that way.
    """
    prior = make_prior(family)
    estimator = ReinMax(window=window, num_samples=3, tau=tau, implicit=implicit).train()
    params = random_params(estimator, prior, batch=5, dim=2, seed=4)
    torch.manual_seed(11)
    out = estimator(params, quadratic_objective, prior, kl=False)
    out.surrogate.backward()

    ref_params = params.detach().clone().requires_grad_()
    posterior = estimator.posterior(ref_params, prior)
    logits = floor_log_pmf(posterior.log_pmf).expand((3,) + posterior.log_pmf.shape)
    torch.manual_seed(11)
    one_hot, _ = reinmax_package.reinmax(logits.contiguous(), tau)
    ref_sample = one_hot @ posterior.outcomes.to(one_hot)
    quadratic_objective(ref_sample).mean(0).mean().backward()

    assert torch.equal(out.sample.detach(), ref_sample.detach())
    # Both sides sum O(n) float32 products per entry, then chain through the same table: a few n roundings
    # of the largest term.
    n = posterior.num_outcomes
    bound = 4 * (n + 4) * U32 * ref_params.grad.abs().max()
    gap = (params.grad - ref_params.grad).abs().max()
    assert gap <= bound, f"gradient gap {gap:.3g} > float32 bound {bound:.3g}"
    assert ref_params.grad.abs().sum() > 0


def test_reinmax_refuses_tau_below_one():
    with pytest.raises(ValueError, match=r"temperature tau \(ReinMax.*>= 1.*got 0.5"):
        ReinMax(tau=0.5)


def test_reinmax_holds_a_schedule_below_one_at_one_with_one_warning():
    estimator = ReinMax()
    with pytest.warns(UserWarning, match=r"ReinMax needs tau >= 1.*0.9 is held at 1"):
        estimator.set_temperature(0.9)
    assert estimator.tau.item() == 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        estimator.set_temperature(0.5)
        estimator.set_temperature(3.0)
    assert estimator.tau.item() == 3.0
    with pytest.raises(ValueError, match=r"temperature tau must be a finite number > 0, got 0.0"):
        estimator.set_temperature(0.0)


def test_gapped_st_refuses_a_gap_that_is_not_positive():
    with pytest.raises(ValueError, match=r"gap \(the margin of the gapped perturbation\) must be a finite number > 0"):
        GappedStraightThrough(gap=0.0)


def test_gapped_perturbation_puts_the_draw_on_top_by_the_gap():
    """``argmax(theta + m) = D``, every other perturbed logit at least ``gap`` below, unchanged if already so."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(500, 7, generator=generator, dtype=torch.float64) * 3
    index = torch.randint(0, 7, (500,), generator=generator)
    one_hot = torch.nn.functional.one_hot(index, 7).double()
    perturbed = gapped_logits(logits, one_hot, 1.5)
    drawn = perturbed.gather(-1, index[:, None])
    top = logits.amax(-1)
    # theta_D + (max theta - theta_D): two float64 roundings of magnitude |max theta| + |theta_D|.
    assert ((drawn[:, 0] - top).abs() <= 2 * U64 * (top.abs() + logits.gather(-1, index[:, None])[:, 0].abs())).all()
    others = perturbed.masked_fill(one_hot.bool(), -math.inf)
    assert (drawn - others.amax(-1, keepdim=True) >= 1.5 - 1e-12).all()
    untouched = (logits <= drawn - 1.5) & ~one_hot.bool()
    assert torch.equal(perturbed[untouched], logits[untouched])
    # The perturbation is held constant: the gradient passes to theta unchanged.
    theta = logits.clone().requires_grad_()
    gapped_logits(theta, one_hot, 1.5).sum().backward()
    assert torch.equal(theta.grad, torch.ones_like(theta))


@pytest.mark.parametrize("family", ["poisson", "multinomial"])
def test_gapped_st_gradient_is_a_function_of_the_draw(family):
    """GST has no noise besides ``D``: estimates with the same draw are equal (to float64 rounding)."""
    estimator = GappedStraightThrough(window=TOY[family], tau=0.7)
    prior = make_prior(family)
    raw = random_params(estimator, prior, 1, 1, seed=2).detach().double()
    params = raw.expand(400, 1, -1).clone().requires_grad_()
    torch.manual_seed(8)
    out = estimator.train()(params, quadratic_objective, prior, kl=False)
    out.surrogate.backward()
    samples = out.sample.detach().reshape(400, -1)
    for value in samples.unique(dim=0):
        rows = params.grad[(samples == value).all(-1), 0]
        assert (rows - rows[0]).abs().max() <= 64 * U64 * rows.abs().max()


def test_gumbel_rao_refuses_k_below_one():
    with pytest.raises(ValueError, match=r"k \(conditional Gumbel draws per sample\) must be an integer >= 1, got 0"):
        GumbelRao(k=0)


# --------------------------------------------------------------------------------------------------
# Bias and variance against the exact gradient
# --------------------------------------------------------------------------------------------------


def gradient_draws(estimator, family: str, objective, seed: int = 3, draws: int = DRAWS):
    """``draws`` independent gradient estimates ``(draws, raw_size)`` at one encoder output, and the exact one.

    The draws are the rows of one batch with the same encoder output (one latent dimension, no KL): the
    surrogate is a batch mean, so ``draws * grad`` of a row is that row's estimate. The exact gradient
    enumerates the posterior table.
    """
    prior = make_prior(family)
    raw = random_params(estimator, prior, 1, 1, seed=2).detach().double()
    params = raw.expand(draws, 1, -1).clone().requires_grad_()
    torch.manual_seed(seed)
    estimator.train()(params, objective, prior, kl=False).surrogate.backward()
    estimates = params.grad[:, 0] * draws
    exact_raw = raw.clone().requires_grad_()
    table = estimator.posterior(exact_raw, prior)
    outcomes = table.outcomes.to(raw).reshape(table.num_outcomes, 1, 1, *table.outcomes.shape[1:])
    (exact,) = torch.autograd.grad((table.pmf.reshape(-1) * objective(outcomes)[:, 0]).sum(), exact_raw)
    return estimates, exact[0, 0]


@pytest.mark.parametrize("implicit", [False, True])
@pytest.mark.parametrize("family", list(TOY))
def test_reinmax_is_unbiased_for_objectives_linear_in_the_draw_at_tau_one(family, implicit):
    """At ``tau = 1``, ``E[2 J(pi1)] = 3 J(pi0) / 2``: ReinMax's mean is the exact gradient of any ``f`` linear in
    ``D`` (here ``f = w . (D @ c)``), within 4 standard errors."""
    estimator = ReinMax(window=TOY[family], tau=1.0, implicit=implicit)
    estimates, exact = gradient_draws(estimator, family, linear_objective)
    mean, se = estimates.mean(0), estimates.std(0) / math.sqrt(len(estimates))
    assert ((mean - exact).abs() <= 4 * se + 1e-12).all(), f"mean {mean} vs exact {exact}, 4 SE {4 * se}"


@pytest.mark.parametrize("tau", [0.5, 1.0])
@pytest.mark.parametrize("family", list(TOY))
def test_gumbel_rao_has_the_mean_of_st_gs(family, tau):
    """Rao-Blackwellisation keeps the mean: Gumbel-Rao's and ST-GS's means agree within 4 standard errors."""
    window = TOY[family]
    rao, _ = gradient_draws(GumbelRao(window=window, tau=tau, k=10), family, quadratic_objective, seed=5)
    st, _ = gradient_draws(GenGSStraightThrough(window=window, tau=tau), family, quadratic_objective, seed=6)
    se = (rao.var(0) / len(rao) + st.var(0) / len(st)).sqrt()
    gap = (rao.mean(0) - st.mean(0)).abs()
    assert (gap <= 4 * se).all(), f"means {rao.mean(0)} vs {st.mean(0)}, 4 SE {4 * se}"


def squared_deviations(estimates):
    """``|x_i - mean|^2`` per draw: their mean is the total variance (the trace of the covariance)."""
    return (estimates - estimates.mean(0)).square().sum(-1)


@pytest.mark.parametrize("tau", [0.5, 1.0])
@pytest.mark.parametrize("family", ["poisson", "multinomial"])
def test_gumbel_rao_variance_is_at_most_st_gs_and_falls_with_k(family, tau):
    """``Var(GR_k) <= Var(ST-GS)`` at the same temperature, and ``Var`` falls as ``k`` grows (1, 10, 100).

    ``Var(GR_k) = Var(E[ST | D]) + E[Var(ST | D)] / k``. Against ST-GS (other noise): ``<=`` within 3 standard
    errors of the difference of the two variance estimates. Across ``k`` the draws share the seed, hence the
    hard samples ``D`` (drawn first), so the differences are paired: from ``k = 1`` to ``10`` the variance must
    fall by more than 3 standard errors of the paired difference, and from ``10`` to ``100`` not rise by more
    (that fall, ``0.09 E[Var(ST | D)]``, is a tenth of the first, below what these draws resolve).
    """
    window = TOY[family]
    st = squared_deviations(
        gradient_draws(GenGSStraightThrough(window=window, tau=tau), family, quadratic_objective, 7, VARIANCE_DRAWS)[0]
    )
    rao = {
        k: squared_deviations(
            gradient_draws(GumbelRao(window=window, tau=tau, k=k), family, quadratic_objective, 3, VARIANCE_DRAWS)[0]
        )
        for k in (1, 10, 100)
    }
    n = len(st)
    for k, dev in rao.items():
        se = math.sqrt((dev.var() + st.var()).item() / n)
        assert dev.mean() <= st.mean() + 3 * se, (
            f"k={k}: Var {dev.mean():.4g} > ST-GS {st.mean():.4g} (3 SE {3 * se:.2g})"
        )
    fall, rise = rao[1] - rao[10], rao[100] - rao[10]
    fall_se, rise_se = (fall.std() / math.sqrt(n)).item(), (rise.std() / math.sqrt(n)).item()
    assert fall.mean() > 3 * fall_se, (
        f"Var does not fall from k=1 to k=10: {rao[1].mean():.4g} -> {rao[10].mean():.4g} (3 SE {3 * fall_se:.2g})"
    )
    assert rise.mean() <= 3 * rise_se, (
        f"Var rises from k=10 to k=100: {rao[10].mean():.4g} -> {rao[100].mean():.4g} (3 SE {3 * rise_se:.2g})"
    )


ESTIMATORS = {
    "ReinMax(tau=1)": lambda window: ReinMax(window=window, tau=1.0),
    "GumbelRao(tau=1,k=10)": lambda window: GumbelRao(window=window, tau=1.0, k=10),
    "GST(tau=1,gap=1)": lambda window: GappedStraightThrough(window=window, tau=1.0),
    "ST-GS(tau=1)": lambda window: GenGSStraightThrough(window=window, tau=1.0),
}


@pytest.mark.parametrize("family", list(TOY))
def test_bias_and_variance_on_the_toy_families(family, capsys):
    """Measure bias ``|mean - exact|`` and total variance against the exact gradient (a nonlinear objective).

    Biased estimators are not bounded here: the test reports the numbers (``pytest -s``) and checks that
    each is finite and its standard error is small beside the gradient (the measurement is meaningful).
    """
    lines = []
    for name, build in ESTIMATORS.items():
        estimates, exact = gradient_draws(build(TOY[family]), family, quadratic_objective)
        bias = (estimates.mean(0) - exact).norm().item()
        se = (estimates.var(0).sum() / len(estimates)).sqrt().item()
        var = squared_deviations(estimates).mean().item()
        assert math.isfinite(bias) and math.isfinite(var)
        assert se < exact.norm().item(), f"{name}: too few draws to measure ({se:.3g} vs |grad| {exact.norm():.3g})"
        lines.append(
            f"{family:18s} {name:22s} |grad| {exact.norm():8.4f}  bias {bias:8.4f} (SE {se:.4f})  var {var:9.4f}"
        )
    with capsys.disabled():
        print("\n" + "\n".join(lines))
