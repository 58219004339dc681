"""Gumbel-Softmax and IGR baselines: their maths, the estimator interface on every family, bad input, training."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from estimators.estimator_testing import FAMILIES, U32, digits_vae, linear_objective, make_prior, random_params
from torch.distributions import Normal, kl_divergence

from gengs_lightning.data import Digits, ToyTargets
from gengs_lightning.distributions import Prior, Window, fit_igr_prior
from gengs_lightning.distributions.igr import (
    apply_planar_flows,
    gaussian_argmax_log_probs,
    gaussian_kl,
    planar_flow,
    planar_flow_inverse,
    softmax_pp,
    softmax_pp_inverse,
    stick_breaking,
    stick_breaking_remaining,
    stick_breaking_truncation,
)
from gengs_lightning.estimators import IGR, GenGSImplicit, GumbelSoftmax
from gengs_lightning.models import ToyTask

BATCH, DIM = 4, 2


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: these tests run many small ops, which two threads slow down on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


#: Estimators of the contract tests, by name.
SPECS = {
    "gs": lambda window, s: GumbelSoftmax(window=window, num_samples=s, tau=0.5),
    "gs_hard": lambda window, s: GumbelSoftmax(window=window, num_samples=s, tau=0.5, hard=True),
    "igr_i": lambda window, s: IGR("I", window=window, num_samples=s, tau=0.5),
    "igr_sb": lambda window, s: IGR("SB", window=window, num_samples=s, tau=0.5),
    "igr_planar": lambda window, s: IGR("Planar", window=window, num_samples=s, tau=0.5),
}


def first_window(family: str):
    return FAMILIES[family][1][0]


def zero_objective(z: torch.Tensor) -> torch.Tensor:
    return z.new_zeros(z.shape[:2])


def within(actual: torch.Tensor, expected: torch.Tensor, stderr: torch.Tensor, what: str, sigmas: float = 4.0):
    gap = (actual - expected).abs()
    assert (gap <= sigmas * stderr).all(), (
        f"{what}: gap {gap.max():.3g} > {sigmas} SE ({stderr.flatten()[gap.argmax()]:.3g})"
    )


# ==================================================================================================
# Gumbel-Softmax
# ==================================================================================================


@pytest.mark.parametrize("family", ["poisson", "multinomial"])
def test_gumbel_softmax_equals_gengs_implicit_in_distribution(family):
    """Same table, same tau: relaxed values with equal means and variances (4 SE), and the same KL."""
    prior, window, n = make_prior(family), first_window(family), 20_000
    gs, gengs = GumbelSoftmax(window=window, tau=0.5), GenGSImplicit(window=window, tau=0.5)
    assert gs.raw_size(prior) == gengs.raw_size(prior)
    logits = torch.randn(gs.raw_size(prior), generator=torch.Generator().manual_seed(3))
    params = logits.expand(n, 1, -1)
    a = gs(params, zero_objective, prior).sample.reshape(n, -1).double()
    b = gengs(params, zero_objective, prior).sample.reshape(n, -1).double()
    va, vb = a.var(0), b.var(0)
    within(a.mean(0), b.mean(0), ((va + vb) / n).sqrt(), "means")
    fourth_a, fourth_b = (a - a.mean(0)).pow(4).mean(0), (b - b.mean(0)).pow(4).mean(0)
    within(va, vb, ((fourth_a - va**2 + fourth_b - vb**2) / n).sqrt(), "variances")
    # the test has power: a temperature of 1 instead of 0.5 moves the variance by far more than 4 SE
    c = GumbelSoftmax(window=window, tau=1.0)(params, zero_objective, prior).sample.reshape(n, -1).double()
    assert ((c.var(0) - vb).abs() > 4 * ((fourth_b - vb**2) / n).sqrt()).any()
    raw = random_params(gs, prior, BATCH, DIM)
    kl_gs = gs(raw, linear_objective, prior).kl
    kl_gengs = gengs(raw, linear_objective, prior).kl
    torch.testing.assert_close(kl_gs, kl_gengs, rtol=0, atol=0)


@pytest.mark.parametrize("tau", [1.0, 0.3])
def test_gumbel_softmax_is_torch_gumbel_softmax_on_one_hot_categorical(tau):
    prior = Prior("categorical", {"probs": [0.5, 0.3, 0.15, 0.05]})
    for hard in (False, True):
        estimator = GumbelSoftmax(num_samples=3, tau=tau, hard=hard)
        params = random_params(estimator, prior, BATCH, DIM)
        torch.manual_seed(11)
        out = estimator(params, linear_objective, prior, kl=False)
        (grad,) = torch.autograd.grad(out.surrogate, params)
        reference_params = params.detach().clone().requires_grad_()
        torch.manual_seed(11)
        reference = F.gumbel_softmax(reference_params.expand(3, *params.shape), tau=tau, hard=hard, dim=-1)
        (reference_grad,) = torch.autograd.grad(linear_objective(reference).mean(), reference_params)
        if hard:
            # torch's y_hard - y_soft.detach() + y_soft equals the one-hot up to one rounding; ours is exact
            assert ((out.sample == 0) | (out.sample == 1)).all()
            torch.testing.assert_close(out.sample, reference, rtol=0, atol=2 * U32)
            torch.testing.assert_close(grad, reference_grad, rtol=1e-5, atol=1e-6)
        else:
            assert torch.equal(out.sample, reference)
            assert torch.equal(grad, reference_grad)


@pytest.mark.parametrize("window", [8, (1, 7)])
def test_gumbel_softmax_hard_values_lie_in_the_window(window):
    prior = make_prior("poisson")
    estimator = GumbelSoftmax(window=window, num_samples=3, hard=True)
    params = random_params(estimator, prior, 64, DIM)
    out = estimator(params, linear_objective, prior)
    low, high = Window.of(window).low, Window.of(window).high
    assert torch.equal(out.sample, out.sample.round()) and low <= out.sample.min() and out.sample.max() <= high
    assert len(out.sample.unique()) > 2
    out.surrogate.backward()
    assert torch.isfinite(params.grad).all() and params.grad.abs().sum() > 0


# ==================================================================================================
# IGR: softmax++, the tau -> 0 limit, KL, the prior, planar flows, stick breaking
# ==================================================================================================


@pytest.mark.parametrize("delta", [1.0, 0.1])
@pytest.mark.parametrize("tau", [1.0, 0.25])
def test_softmax_pp_lies_on_the_simplex_and_is_invertible(tau, delta):
    y = 2.0 * torch.randn(50, 6, dtype=torch.float64)
    z = softmax_pp(y, tau, delta)
    assert z.shape == (50, 7) and (z > 0).all()
    torch.testing.assert_close(z.sum(-1), torch.ones(50, dtype=torch.float64), rtol=0, atol=8 * 2.0**-53)
    # the paper's formula exp(y_k / tau) / (sum_j exp(y_j / tau) + delta) and the remainder
    denominator = (y / tau).exp().sum(-1, keepdim=True) + delta
    torch.testing.assert_close(z[:, :-1], (y / tau).exp() / denominator, rtol=1e-13, atol=0)
    torch.testing.assert_close(z[:, -1:], delta / denominator, rtol=1e-13, atol=0)
    torch.testing.assert_close(softmax_pp_inverse(z, tau, delta), y, rtol=0, atol=1e-10)


def test_softmax_pp_tends_to_the_argmax_one_hot_as_tau_vanishes():
    y = torch.randn(200, 5, dtype=torch.float64)
    scores = torch.cat([y, torch.zeros(200, 1, dtype=torch.float64)], -1)
    one_hot = F.one_hot(scores.argmax(-1), 6).double()
    top2 = scores.topk(2, -1).values
    gap = top2[:, 0] - top2[:, 1]
    previous = None
    for tau in (1.0, 0.1, 0.01, 0.001):
        distance = (softmax_pp(y, tau) - one_hot).abs().sum(-1)
        # |softmax - one_hot|_1 <= 2 * 5 * exp(-gap / tau)
        assert (distance <= 10 * torch.exp(-gap / tau) + 1e-15).all()
        if previous is not None:
            assert distance.mean() < previous
        previous = distance.mean()


@pytest.mark.parametrize("variant", ["I", "SB", "Planar"])
def test_relaxed_and_exact_samples_follow_the_induced_categorical(variant):
    """At a small tau the mean relaxed one-hot, and the eval-mode exact samples, follow ``posterior.pmf``.

    I's table is the quadrature (checked to 4 SE of the samples); SB's and Planar's are fixed-seed Monte
    Carlo estimates, so their own standard error and pseudo-count enter the tolerance.
    """
    prior = Prior("categorical", {"probs": [0.4, 0.3, 0.2, 0.1]})
    tau = 1e-3 if variant != "SB" else 1e-4  # SB relaxes eta / tau with eta in (0, 1)
    estimator = IGR(variant, num_samples=1, tau=tau)
    start = estimator.raw_like(prior)  # the fitted prior (and identity flows), moved a little
    raw = (start + 0.3 * torch.randn(start.shape, generator=torch.Generator().manual_seed(5))).reshape(1, 1, -1)
    n = 20_000
    params = raw.expand(n, 1, -1)
    pmf = estimator.posterior(raw, prior).pmf.reshape(-1).double()
    table_error = 0.0 if variant == "I" else pmf * (1 - pmf) / estimator.mc_samples
    bias = 0.0 if variant == "I" else 0.5 * 4 / estimator.mc_samples
    relaxed = estimator(params, zero_objective, prior).sample.reshape(n, -1).double()
    estimator.eval()
    exact = estimator(params, zero_objective, prior).sample.reshape(n, -1).double()
    assert ((exact == 0) | (exact == 1)).all()
    for what, sample in (("relaxed", relaxed), ("exact", exact)):
        stderr = (sample.var(0) / n + table_error).sqrt()
        within(sample.mean(0), pmf, stderr + bias / 4, f"{variant} {what} frequencies vs posterior table")
    if variant == "SB":  # the largest stick piece is never softmax++'s extra category
        assert exact[:, -1].sum() == 0 and pmf[-1] < 1e-3
        pmf = pmf[:-1]
    assert pmf.min() > 0.01  # the check covers every (reachable) category


def test_gaussian_argmax_quadrature_matches_monte_carlo_and_a_refined_rule():
    loc = torch.tensor([[0.5, -0.3, 1.0, -2.0], [0.5, 0.3, 2.0, -1.0], [0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    # the second row mixes standard deviations from 0.018 to 7.4 (steps of F far narrower than the normals)
    log_scale = torch.tensor([[0.0, 0.7, -0.5, 1.0], [2.0, -4.0, -3.0, 0.0], [0.0] * 4], dtype=torch.float64)
    probs = gaussian_argmax_log_probs(loc, log_scale).exp()
    torch.testing.assert_close(probs.sum(-1), torch.ones(3, dtype=torch.float64), rtol=0, atol=1e-10)
    refined = gaussian_argmax_log_probs(loc, log_scale, quadrature_nodes=32).exp()
    torch.testing.assert_close(probs, refined, rtol=0, atol=1e-10)
    n = 400_000
    y = loc + log_scale.exp() * torch.randn(n, *loc.shape, dtype=torch.float64)
    index = torch.cat([y, torch.zeros(n, 3, 1, dtype=torch.float64)], -1).argmax(-1)
    frequencies = F.one_hot(index, 5).double().mean(0)
    within(frequencies, probs, (probs * (1 - probs) / n).sqrt(), "quadrature vs Monte Carlo")
    # symmetric case: P(argmax(y, 0) = last) = 2^-4 exactly, the others share the rest
    torch.testing.assert_close(probs[2], torch.tensor([15 / 64] * 4 + [1 / 16], dtype=torch.float64))
    # differentiable: gradients match finite differences
    loc_ = loc[:1].clone().requires_grad_()
    torch.autograd.gradcheck(lambda v: gaussian_argmax_log_probs(v, log_scale[:1]), (loc_,), eps=1e-6, atol=1e-5)


def test_closed_form_gaussian_kl_matches_monte_carlo_and_torch():
    g = torch.Generator().manual_seed(2)
    loc_q, loc_p = (
        torch.randn(3, 5, generator=g, dtype=torch.float64),
        torch.randn(3, 5, generator=g, dtype=torch.float64),
    )
    ls_q, ls_p = (
        0.5 * torch.randn(3, 5, generator=g, dtype=torch.float64),
        0.5 * torch.randn(3, 5, generator=g, dtype=torch.float64),
    )
    closed = gaussian_kl(loc_q, ls_q, loc_p, ls_p)
    q, p = Normal(loc_q, ls_q.exp()), Normal(loc_p, ls_p.exp())
    torch.testing.assert_close(closed, kl_divergence(q, p).sum(-1), rtol=1e-12, atol=1e-14)
    y = q.sample((200_000,))
    log_ratio = (q.log_prob(y) - p.log_prob(y)).sum(-1)
    within(log_ratio.mean(0), closed, log_ratio.std(0) / math.sqrt(y.shape[0]), "KL vs Monte Carlo")


@pytest.mark.parametrize("variant", ["I", "SB"])
def test_igr_kl_is_the_gaussian_kl_to_the_fitted_prior(variant):
    prior = make_prior("geometric")
    estimator = IGR(variant, window=first_window("geometric"))
    params = random_params(estimator, prior, BATCH, DIM)
    out = estimator(params, linear_objective, prior)
    fit = estimator.fitted_prior(prior)
    m = fit.loc.shape[-1]
    expected = gaussian_kl(params[..., :m].double(), params[..., m:].double(), fit.loc, fit.log_scale).sum(-1)
    torch.testing.assert_close(out.kl.double(), expected, rtol=1e-5, atol=1e-5)
    start = estimator.raw_like(prior).expand(BATCH, DIM, -1)
    assert torch.equal(estimator(start, linear_objective, prior).kl, torch.zeros(BATCH))


def test_planar_kl_with_identity_flows_estimates_the_gaussian_kl():
    prior = make_prior("poisson")
    estimator = IGR("Planar", window=first_window("poisson"))
    raw = estimator.raw_like(prior).clone()  # identity flows: u_hat = 0
    m = estimator.fitted_prior(prior).loc.shape[-1]
    g = torch.Generator().manual_seed(4)
    raw[: 2 * m] = raw[: 2 * m] + 0.5 * torch.randn(2 * m, generator=g)
    n = 40_000
    out = estimator(raw.expand(n, 1, -1), zero_objective, prior)
    fit = estimator.fitted_prior(prior)
    expected = gaussian_kl(raw[:m].double(), raw[m : 2 * m].double(), fit.loc, fit.log_scale)
    kl = out.kl.double()
    within(kl.mean(), expected, kl.std() / math.sqrt(n), "Planar Monte Carlo KL vs closed form")


@pytest.mark.parametrize(
    ("family", "params", "window"),
    [
        ("poisson", {"rate": 2.0}, 16),
        ("negative_binomial", {"total_count": 5, "probs": 0.3}, 20),
        ("categorical", {"probs": [0.7, 0.2, 0.1]}, None),
        ("poisson", {"rate": [2.0, 6.0]}, 16),
    ],
)
@pytest.mark.parametrize("variant", ["I", "SB"])
def test_fitted_prior_is_within_the_reported_total_variation(variant, family, params, window):
    """Independent draws of the fitted Gaussian's tau -> 0 category are within the reported TV of the table."""
    prior = Prior(family, params)
    estimator = IGR(variant, window=window)
    table = prior.truncated(prior.resolve_window(None if window is None else Window.of(window)))
    fit = estimator.fitted_prior(prior)
    p = table.log_pmf.double().log_softmax(-1).exp()  # the float32 table, renormalised in float64
    assert fit.log_probs.shape == p.shape and fit.tv.shape == p.shape[:-1]
    torch.testing.assert_close(fit.tv, 0.5 * (fit.log_probs.exp() - p).abs().sum(-1), rtol=1e-12, atol=1e-15)
    n = 1 << 16
    y = fit.loc + fit.log_scale.exp() * torch.randn(n, *fit.loc.shape, dtype=torch.float64)
    x = stick_breaking(y) if variant == "SB" else y
    index = torch.cat([x, torch.zeros_like(x[..., :1])], -1).argmax(-1)
    frequencies = F.one_hot(index, p.shape[-1]).double().mean(0)
    tv = 0.5 * (frequencies - p).abs().sum(-1)
    sign = torch.sign(frequencies - p)
    stderr = (F.one_hot(index, p.shape[-1]).double() * sign).sum(-1).std(0) / (2 * math.sqrt(n))
    if variant == "I":
        assert (fit.tv < 1e-8).all(), fit.tv
        within(frequencies, p, (p * (1 - p) / n).sqrt() + fit.tv.unsqueeze(-1), "fitted I prior vs table")
    else:
        # both TV estimates carry the same positive Monte Carlo bias; their difference is centred
        within(tv, fit.tv, (stderr**2 + fit.tv_stderr**2).sqrt() + 0.5 * p.shape[-1] / n, "SB TV")
        # the last outcome is out of SB's reach as tau -> 0: TV >= its mass (up to the pseudo-counts)
        last = p[..., -1]
        assert (fit.tv >= last - p.shape[-1] / n).all() and (fit.tv < last + 0.04).all(), fit.tv
    # the posterior that raw_like gives is the fitted prior
    start = estimator.raw_like(prior)
    posterior = estimator.posterior(start.expand(3, *start.shape), prior)
    if variant == "I":
        torch.testing.assert_close(
            posterior.pmf.double(), fit.log_probs.exp().expand(3, *p.shape), rtol=1e-4, atol=1e-6
        )


def test_planar_flows_are_invertible_and_log_det_matches_autograd():
    g = torch.Generator().manual_seed(9)
    m = 5
    w = torch.randn(m, generator=g, dtype=torch.float64)
    u = -3.0 * w / w.dot(w) + 0.3 * torch.randn(m, generator=g, dtype=torch.float64)  # w . u < -1: not invertible
    assert w.dot(u) < -1
    b = torch.tensor(0.4, dtype=torch.float64)
    y = 1.5 * torch.randn(20, m, generator=g, dtype=torch.float64)
    x, log_det = planar_flow(y, u, w, b)
    # the constrained u_hat satisfies w . u_hat > -1: y -> x is a bijection, found again by bisection
    u_hat = x[0] - y[0]
    u_hat = u_hat / torch.tanh(w.dot(y[0]) + b)
    assert w.dot(u_hat) > -1
    torch.testing.assert_close(planar_flow_inverse(x, u, w, b), y, rtol=0, atol=1e-10)
    for i in range(4):
        jacobian = torch.autograd.functional.jacobian(lambda v: planar_flow(v, u, w, b)[0], y[i])
        torch.testing.assert_close(log_det[i], torch.linalg.slogdet(jacobian).logabsdet, rtol=0, atol=1e-12)
    # a composition of flows: summed log-determinants
    flows = tuple(torch.randn(3, *shape, generator=g, dtype=torch.float64) for shape in ((m,), (m,), ()))
    x, log_det = apply_planar_flows(y, flows)
    for i in range(4):
        jacobian = torch.autograd.functional.jacobian(lambda v: apply_planar_flows(v, flows)[0], y[i])
        torch.testing.assert_close(log_det[i], torch.linalg.slogdet(jacobian).logabsdet, rtol=0, atol=1e-12)


def test_stick_breaking_support_grows_until_the_remaining_mass_is_below_the_threshold():
    m = 60
    y = -2.5 + 0.3 * torch.randn(8, m, dtype=torch.float64)  # fractions of about 0.08: long sticks
    eta = stick_breaking(y)
    log_remaining = stick_breaking_remaining(y)
    torch.testing.assert_close(eta.sum(-1) + log_remaining[:, -1].exp(), torch.ones(8, dtype=torch.float64))
    previous = 0
    for threshold in (0.5, 0.1, 0.01, 1e-3, 1e-6):
        n = stick_breaking_truncation(y, threshold)
        assert n >= previous
        previous = n
        if n < m:
            assert (log_remaining[:, n - 1].exp() < threshold).all()  # every point meets the threshold at n
            assert n == 1 or (log_remaining[:, n - 2].exp() >= threshold).any()  # and n - 1 is not enough
        else:
            assert (log_remaining[:, m - 2].exp() >= threshold).any()  # capped at the window
    assert previous == m
    # the estimator relaxes over the first n + 1 outcomes and reports n + 1 and the remaining mass
    prior = Prior("geometric", {"probs": 0.05})
    estimator = IGR("SB", window=80, threshold=0.01)
    params = torch.cat([torch.full((16, 1, 79), -2.5), torch.full((16, 1, 79), -1.0)], -1)
    out = estimator(params, zero_objective, prior, kl=False)
    used = int(out.stats["trunc_n"]) - 1
    assert 10 < used < 79 and out.stats["sb_remaining_mass"] < 0.01
    assert out.sample.max() <= used


# ==================================================================================================
# The interface on every family
# ==================================================================================================


def check_exact_values(family: str, sample: torch.Tensor, outcomes: torch.Tensor):
    assert torch.equal(sample, sample.round())
    if outcomes.dim() == 1:
        assert torch.isin(sample, outcomes).all(), f"{family}: {sample.unique()} not in {outcomes}"
    else:
        rows = sample.reshape(-1, outcomes.shape[-1])
        assert (rows.unsqueeze(1) == outcomes).all(-1).any(-1).all(), f"{family}: a value is not an outcome"


@pytest.mark.parametrize("num_samples", [1, 3])
@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("spec", list(SPECS))
def test_interface_contract(spec, family, num_samples):
    prior, window = make_prior(family), first_window(family)
    estimator = SPECS[spec](window, num_samples)
    params = random_params(estimator, prior, BATCH, DIM)
    out = estimator(params, linear_objective, prior)
    event = tuple(prior.event_shape)
    assert out.sample.shape == (num_samples, BATCH, DIM, *event)
    assert out.objective.shape == (num_samples, BATCH) and out.kl.shape == (BATCH,) and out.loss.shape == (BATCH,)
    assert torch.isfinite(out.surrogate) and torch.isfinite(out.kl).all()
    tolerance = (num_samples + 1) * U32 * (out.objective.abs().mean(0) + out.kl.abs()).max().item()
    torch.testing.assert_close(out.loss, out.objective.mean(0) + out.kl, rtol=0, atol=tolerance)
    torch.testing.assert_close(out.surrogate, out.loss.mean(), rtol=(BATCH + 1) * U32, atol=0)
    torch.testing.assert_close(out.objective, linear_objective(out.sample), rtol=0, atol=0)
    assert {"trunc_n", "trunc_tail_mass"} <= set(out.stats)
    assert all(torch.isfinite(v) and not v.requires_grad for v in out.stats.values())
    out.surrogate.backward()
    assert torch.isfinite(params.grad).all() and params.grad.abs().sum() > 0
    assert estimator.raw_like(prior).shape[-1] == estimator.raw_size(prior)

    estimator.eval()
    with torch.no_grad():
        exact = estimator(params, linear_objective, prior)
    outcomes = out.posterior.outcomes
    check_exact_values(family, exact.sample, outcomes)
    assert exact.sample.shape == out.sample.shape and torch.isfinite(exact.loss).all()
    # importance weights need log q and log p of exact values
    posterior = estimator.posterior(params.detach(), prior)
    prior_table = estimator.prior_distribution(posterior, prior)
    assert (
        torch.isfinite(posterior.log_prob(exact.sample)).all()
        and torch.isfinite(prior_table.log_prob(exact.sample)).all()
    )
    torch.testing.assert_close(posterior.pmf.sum(-1), torch.ones(BATCH, DIM), rtol=0, atol=1e-5)
    check_exact_values(family, posterior.sample((2,)), outcomes)


# ==================================================================================================
# Bad input
# ==================================================================================================


def test_unknown_variant_lists_the_accepted_ones():
    with pytest.raises(ValueError, match=r"unknown IGR variant 'sb'; accepted: I, SB, Planar"):
        IGR("sb")


@pytest.mark.parametrize("tau", [0.0, -1.0, float("nan"), float("inf"), "1"])
@pytest.mark.parametrize("make", [lambda tau: GumbelSoftmax(tau=tau), lambda tau: IGR("I", tau=tau)])
def test_non_positive_temperatures_are_rejected(make, tau):
    with pytest.raises(ValueError, match=r"temperature tau must be a finite number > 0, got"):
        make(tau)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_flows": 0}, r"num_flows must be an integer >= 1, got 0"),
        ({"num_flows": 1.5}, r"num_flows must be an integer >= 1, got 1.5"),
        ({"threshold": 0.0}, r"threshold .* must be a number in \(0, 1\), got 0.0"),
        ({"threshold": 1.0}, r"threshold .* must be a number in \(0, 1\), got 1.0"),
        ({"threshold": 1.5}, r"threshold .* must be a number in \(0, 1\), got 1.5"),
        ({"delta": 0.0}, r"delta must be a finite number > 0, got 0.0"),
        ({"mc_samples": 1}, r"mc_samples must be an integer >= 2, got 1"),
        ({"quadrature_nodes": 1}, r"quadrature_nodes must be an integer >= 2, got 1"),
        ({"seed": -1}, r"seed must be an integer >= 0, got -1"),
        ({"window": 0}, r"window must hold at least 2 outcomes: a truncation level n >= 2 .*got 0"),
    ],
)
@pytest.mark.parametrize("variant", ["I", "SB", "Planar"])
def test_bad_igr_arguments_are_rejected(variant, kwargs, message):
    with pytest.raises(ValueError, match=message):
        IGR(variant, **kwargs)


def test_bad_gumbel_softmax_arguments_are_rejected():
    with pytest.raises(ValueError, match=r"hard must be a bool \(True or False\), got 'yes'"):
        GumbelSoftmax(hard="yes")
    with pytest.raises(ValueError, match=r"a window is a truncation level n >= 1 or a pair"):
        GumbelSoftmax(window=(1, 2, 3))


@pytest.mark.parametrize("spec", list(SPECS))
def test_wrong_encoder_shapes_and_objectives_are_rejected(spec):
    prior = make_prior("poisson")
    estimator = SPECS[spec](8, 2)
    size = estimator.raw_size(prior)
    for shape in [(BATCH, DIM, size + 1), (BATCH, size)]:
        with pytest.raises(ValueError, match=rf"shape \(batch, latent_dim, {size}\); got"):
            estimator(torch.zeros(shape), linear_objective, prior)
    with pytest.raises(ValueError, match=r"objective\(z\) must return per-sample, per-example losses \(2, 4\)"):
        estimator(torch.zeros(BATCH, DIM, size), lambda z: z.sum(), prior)


def test_igr_needs_two_outcomes_and_categorical_needs_no_window():
    with pytest.raises(ValueError, match=r"window must hold at least 2 outcomes"):
        IGR("I", window=1)
    with pytest.raises(ValueError, match=r"IGR needs a table of at least two outcomes; .* has 1"):
        IGR("I").raw_size(Prior("categorical", {"probs": [1.0]}))
    with pytest.raises(ValueError, match=r"takes no window"):
        IGR("SB", window=4).raw_size(make_prior("categorical"))
    with pytest.raises(ValueError, match=r"at least two categories"):
        fit_igr_prior(torch.zeros(1))


# ==================================================================================================
# Training
# ==================================================================================================

TRAINING = {
    "gumbel_softmax": lambda window: GumbelSoftmax(window=window, tau=0.5),
    "igr_i": lambda window: IGR("I", window=window, tau=0.5),
    "igr_sb": lambda window: IGR("SB", window=window, tau=0.05),
    "igr_planar": lambda window: IGR("Planar", window=window, tau=0.5),
}


def quiet_trainer(**kwargs) -> pl.Trainer:
    # log every step: the models only log step scalars when the trainer writes them
    options = {"logger": False, "enable_checkpointing": False, "enable_progress_bar": False, "log_every_n_steps": 1}
    return pl.Trainer(enable_model_summary=False, **{**options, **kwargs})


@pytest.mark.parametrize("name", list(TRAINING))
def test_toy_task_trains_with_gradient_statistics(name):
    """ToyTask on Poisson(20) from Poisson(10): window 60 for Gumbel-Softmax, 45 for IGR (K - 1 = 44 dimensions)."""
    window = 60 if name == "gumbel_softmax" else 45
    task = ToyTask(TRAINING[name](window), Prior("poisson", {"rate": 20.0}), init={"rate": 10.0}, grad_every=5)
    start = task.estimator.posterior(task.raw.detach().expand(1, 1, -1), task.target).mean.item()
    # exact for the quadrature tables; SB's fit and the Monte Carlo tables (SB, Planar) carry their errors
    assert abs(start - 10.0) < (0.5 if name in ("igr_sb", "igr_planar") else 1e-3)
    statistics = []
    original = task.gradient_statistics
    task.gradient_statistics = lambda batch: statistics.append(original(batch)) or statistics[-1]
    quiet_trainer(max_steps=10).fit(task, ToyTargets(num_targets=20))
    assert (
        task.trainer.global_step == 10
        and len(statistics) == 2
        and all(math.isfinite(float(v)) for s in statistics for v in s.values())
    )
    metrics = task.trainer.callback_metrics
    assert math.isfinite(float(metrics["train/loss"])) and math.isfinite(float(metrics["train/mean"]))
    assert torch.isfinite(task.raw).all()


@pytest.mark.parametrize("name", list(TRAINING))
def test_vae_trains_on_digits(name):
    torch.manual_seed(0)
    model = digits_vae(TRAINING[name](16), iw_samples=5)
    trainer = quiet_trainer(max_steps=3, limit_val_batches=1, limit_test_batches=1, num_sanity_val_steps=0)
    data = Digits(batch_size=32, eval_batch_size=64)
    trainer.fit(model, datamodule=data)
    assert math.isfinite(float(trainer.callback_metrics["train/loss"]))
    (result,) = trainer.test(model, datamodule=data, verbose=False)
    assert set(result) == {"test/loss", "test/recon", "test/kl", "test/nll_iw"}
    assert all(math.isfinite(v) for v in result.values())
