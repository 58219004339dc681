"""Rao-Blackwellised estimators (StoRB, UnOrd, GenGSRB): unbiasedness, exactness, variance, contract, errors.

Statistical tests draw many independent gradient estimates in one pass by replicating the batch (examples
are independent and the surrogate is a batch mean, so ``M`` times its gradient with respect to replica
``m`` is draw ``m``), and compare their mean with the exact gradient of ``E_table[f] + KL`` obtained by
enumerating the truncated tables of every latent dimension. Every tolerance is a multiple (4) of a standard
error estimated from the same draws; the unbiasedness check is shown to flag deliberately mis-weighted estimators.
"""

from __future__ import annotations

import io
import itertools
import math
import re

import pytest
import pytorch_lightning as pl
import torch
from estimators.estimator_testing import COUNT_FAMILIES, FAMILIES, U32, digits_vae, make_prior
from torch import Tensor
from torch.distributions import kl_divergence

from gengs_lightning.callbacks import TemperatureSchedule
from gengs_lightning.data import Digits, ToyTargets
from gengs_lightning.distributions import Prior
from gengs_lightning.estimators import EstimatorOutput, GenGSRB, StoRB, UnOrd
from gengs_lightning.estimators.rao_blackwell import MAX_SET_SIZE, unordered_set_probabilities
from gengs_lightning.models import ToyTask

BATCH, DIM = 4, 2
KINDS = {"storb": StoRB, "unord": UnOrd, "gengsrb": GenGSRB}


def build(kind: str, family: str, **kwargs):
    """The estimator of ``kind`` with the family's first test window (none for the vector families)."""
    window = FAMILIES[family][1][0]
    return KINDS[kind](window=window, **kwargs)


def scalar(z: Tensor) -> Tensor:
    """One number per latent value: the count itself, or ``z @ (1, ..., K)`` for one-hot and count vectors."""
    if z.dim() == 3:
        return z
    return z @ torch.arange(1, z.shape[-1] + 1, dtype=z.dtype, device=z.device)


class Objective:
    """``f(z) = sum_d (v_d - t_d)^2 + phi v_1 v_D`` with ``v = scalar(z)``: nonlinear, dimensions interact.

    ``phi`` plays a decoder parameter: one per example (so replicated examples give independent draws of
    its gradient too). Counts the configurations it is evaluated at.
    """

    def __init__(self, targets: Tensor, phi: Tensor):
        self.targets, self.phi = targets, phi
        self.calls: list[int] = []

    def __call__(self, z: Tensor) -> Tensor:
        self.calls.append(z.shape[0])
        v = scalar(z)
        return (v - self.targets).square().sum(-1) + self.phi * v[..., 0] * v[..., -1]


def problem(estimator, prior: Prior, batch: int = BATCH, dim: int = DIM, seed: int = 0):
    """Encoder outputs ``(B, D, raw)``, targets ``(B, D)`` and ``phi`` ``(B,)``, float64, from a fixed seed."""
    generator = torch.Generator().manual_seed(seed)
    raw = torch.randn(batch, dim, estimator.raw_size(prior), generator=generator, dtype=torch.float64)
    targets = 2.0 + torch.randn(batch, dim, generator=generator, dtype=torch.float64)
    phi = torch.full((batch,), 0.5, dtype=torch.float64)
    return raw, targets, phi


def exact_gradient(estimator, prior: Prior, raw: Tensor, targets: Tensor, phi: Tensor, kl: bool) -> Tensor:
    """Gradient of ``mean_b (E_table[f] + KL)`` w.r.t. (encoder output, phi), by enumerating ``n^D`` configurations."""
    params, phi = raw.clone().requires_grad_(), phi.clone().requires_grad_()
    posterior = estimator.posterior(params, prior)
    dim, n = raw.shape[1], posterior.num_outcomes
    grid = torch.tensor(list(itertools.product(range(n), repeat=dim)))  # (n^D, D)
    z = posterior.outcomes[grid]  # (n^D, D, *event)
    z = z.unsqueeze(1).expand(z.shape[0], raw.shape[0], *z.shape[1:])
    log_weight = sum(posterior.log_pmf[:, d, grid[:, d]].T for d in range(dim))  # (n^D, B)
    loss = (log_weight.exp() * Objective(targets, phi)(z)).sum(0)
    if kl:
        loss = loss + kl_divergence(posterior, estimator.prior_distribution(posterior, prior)).sum(-1)
    grads = torch.autograd.grad(loss.mean(), [params, phi])
    return torch.cat([g.reshape(-1) for g in grads])


def gradient_draws(estimator, prior, raw, targets, phi, num_draws: int, kl: bool, seed: int = 1):
    """``num_draws`` independent estimates of the gradient of ``mean_b loss`` w.r.t. (encoder output, phi)."""
    batch = raw.shape[0]
    replicas = raw.expand(num_draws, *raw.shape).clone().requires_grad_()
    phis = phi.expand(num_draws, batch).clone().requires_grad_()
    objective = Objective(targets.repeat(num_draws, 1), phis.reshape(-1))
    torch.manual_seed(seed)
    out = estimator(replicas.reshape(num_draws * batch, *raw.shape[1:]), objective, prior, kl=kl)
    grads = torch.autograd.grad(out.surrogate * num_draws, [replicas, phis])
    return torch.cat([g.reshape(num_draws, -1) for g in grads], 1)


def z_scores(draws: Tensor, exact: Tensor) -> Tensor:
    """``(mean - exact) / SE`` per coordinate (a coordinate without spread compares with float64 rounding)."""
    error = draws.std(0) / math.sqrt(draws.shape[0])
    floor = 1e-9 * (exact.abs().max() + 1.0)
    return (draws.mean(0) - exact) / (error + floor)


# --------------------------------------------------------------------------------------------------
# Unbiasedness of StoRB and UnOrd against enumeration, and the power to see a wrong weighting
# --------------------------------------------------------------------------------------------------

UNBIASED_CASES = [
    ("storb-baseline-poisson-kl", lambda: StoRB(window=8), "poisson", True),
    ("storb-plain-poisson-nokl", lambda: StoRB(window=8, builtin_baseline=False), "poisson", False),
    ("storb-m2-categorical-kl", lambda: StoRB(num_summed=2), "categorical", True),
    ("storb-m3-multinomial-nokl", lambda: StoRB(num_summed=3, builtin_baseline=False), "multinomial", False),
    ("unord-k2-poisson-nokl", lambda: UnOrd(window=8), "poisson", False),
    ("unord-k3-poisson-kl", lambda: UnOrd(window=8, num_samples=3), "poisson", True),
    ("unord-k2-plain-categorical-kl", lambda: UnOrd(builtin_baseline=False), "categorical", True),
    ("unord-k4-negative_binomial-nokl", lambda: UnOrd(window=10, num_samples=4), "negative_binomial", False),
]


@pytest.mark.parametrize(
    ("factory", "family", "kl"), [c[1:] for c in UNBIASED_CASES], ids=[c[0] for c in UNBIASED_CASES]
)
def test_mean_gradient_is_the_exact_gradient(factory, family, kl):
    """Encoder and decoder (``phi``) gradients: every coordinate within 4 standard errors of the exact one."""
    estimator = factory()
    prior = make_prior(family)
    raw, targets, phi = problem(estimator, prior)
    exact = exact_gradient(estimator, prior, raw, targets, phi, kl)
    draws = gradient_draws(estimator, prior, raw, targets, phi, 4000, kl)
    scores = z_scores(draws, exact)
    assert scores.abs().max() <= 4, f"z-scores {scores}"
    assert draws.var(0).sum() > 0  # a Monte Carlo estimate, not the enumeration in disguise


class WrongStoRB(StoRB):
    """StoRB that forgets the ``1 - q(C)`` factor of the sampled category (weights it by one)."""

    def _weights(self, log_pmf, index, values):
        a, beta = super()._weights(log_pmf, index, values)
        return torch.cat([a[..., :-1], torch.ones_like(a[..., -1:])], -1), beta


class WrongUnOrd(UnOrd):
    """UnOrd that averages the set as if it were drawn with replacement (weights ``1 / k``)."""

    def _weights(self, log_pmf, index, values):
        a, beta = super()._weights(log_pmf, index, values)
        return torch.full_like(a, 1.0 / a.shape[-1]), beta


class WrongBaselineStoRB(StoRB):
    """StoRB* whose baseline is the sampled category's own value (it depends on the sample: biased)."""

    def _weights(self, log_pmf, index, values):
        a, _ = super()._weights(log_pmf, index, values)
        return a, values[..., -1:]


@pytest.mark.parametrize("wrong", [WrongStoRB, WrongUnOrd, WrongBaselineStoRB], ids=lambda c: c.__name__)
def test_a_wrong_weighting_is_detected(wrong):
    """The unbiasedness check has power: the same check, draws and seed, flags a mis-weighted estimator."""
    estimator = wrong(window=8)
    prior = make_prior("poisson")
    raw, targets, phi = problem(estimator, prior)
    exact = exact_gradient(estimator, prior, raw, targets, phi, kl=True)
    draws = gradient_draws(estimator, prior, raw, targets, phi, 4000, kl=True)
    assert z_scores(draws, exact).abs().max() > 10


def test_unordered_set_probabilities_match_brute_force():
    """``p(S)``, ``P(b_1 = s | S)`` and ``P(b_1, b_2 | S)`` against sampling-free enumeration of all ordered draws."""
    generator = torch.Generator().manual_seed(0)
    q = torch.softmax(torch.randn(6, generator=generator, dtype=torch.float64), 0)
    subset = [4, 1, 3]
    log_p = q[subset].log()
    outside = q[[i for i in range(6) if i not in subset]].sum().log()
    log_set, first, pair = unordered_set_probabilities(log_p, outside)

    def ordered(order):
        prob, left = 1.0, 1.0
        for i in order:
            prob, left = prob * q[i].item() / left, left - q[i].item()
        return prob

    orders = {order: ordered(order) for order in itertools.permutations(subset)}
    total = sum(orders.values())
    assert log_set.exp().item() == pytest.approx(total, rel=1e-12)
    for a, s in enumerate(subset):
        assert first[a].exp().item() == pytest.approx(sum(p for o, p in orders.items() if o[0] == s) / total, rel=1e-12)
        for b, t in enumerate(subset):
            expected = sum(p for o, p in orders.items() if o[:2] == (s, t)) / total
            assert pair[a, b].exp().item() == pytest.approx(expected, rel=1e-12, abs=1e-300)
    # the whole table as the set: p(S) = 1 and the first draw is a plain draw of q
    log_set, first, _ = unordered_set_probabilities(q.log(), torch.tensor(-math.inf, dtype=torch.float64))
    assert log_set.item() == pytest.approx(0.0, abs=1e-12)
    torch.testing.assert_close(first.exp(), q, rtol=1e-12, atol=0)


# --------------------------------------------------------------------------------------------------
# Exactness: all categories summed (StoRB m = n - 1, UnOrd k = n), GenGSRB on two categories
# --------------------------------------------------------------------------------------------------

EXACT_CASES = [
    ("storb-m2-categorical", lambda: StoRB(num_summed=2), "categorical"),
    ("storb-m3-poisson-w4", lambda: StoRB(window=4, num_summed=3), "poisson"),
    ("storb-plain-m3-poisson-w4", lambda: StoRB(window=4, num_summed=3, builtin_baseline=False), "poisson"),
    ("unord-k3-categorical", lambda: UnOrd(num_samples=3), "categorical"),
    ("unord-k4-poisson-w4", lambda: UnOrd(window=4, num_samples=4), "poisson"),
    ("gengsrb-binomial-n2", lambda: GenGSRB(tau=0.7), "binomial1"),
    ("gengsrb-categorical-k2", lambda: GenGSRB(tau=2.0), "categorical2"),
]
EXTRA_PRIORS = {
    "binomial1": Prior("binomial", {"total_count": 1, "probs": 0.3}),
    "categorical2": Prior("categorical", {"probs": [0.6, 0.4]}),
}


@pytest.mark.parametrize(("factory", "family"), [c[1:] for c in EXACT_CASES], ids=[c[0] for c in EXACT_CASES])
def test_summing_every_category_gives_the_exact_gradient_with_zero_variance(factory, family):
    """One latent dimension: when the summed categories and the sample (or the set) cover the table, or
    GenGSRB's rest is a single outcome, every draw is the exact gradient (float64 rounding)."""
    estimator = factory()
    prior = EXTRA_PRIORS.get(family) or make_prior(family)
    raw, targets, phi = problem(estimator, prior, dim=1)
    exact = exact_gradient(estimator, prior, raw, targets, phi, kl=True)
    draws = gradient_draws(estimator, prior, raw, targets, phi, 50, kl=True)
    torch.testing.assert_close(draws, exact.expand_as(draws), rtol=1e-10, atol=1e-10 * exact.abs().max().item())


def test_gengsrb_on_two_categories_is_unbiased_with_interacting_dimensions():
    """Two latent dimensions of two categories: per dimension exact given the other's draw, so unbiased."""
    estimator = GenGSRB(tau=0.5)
    prior = EXTRA_PRIORS["categorical2"]
    raw, targets, phi = problem(estimator, prior)
    exact = exact_gradient(estimator, prior, raw, targets, phi, kl=True)
    draws = gradient_draws(estimator, prior, raw, targets, phi, 4000, kl=True)
    assert z_scores(draws, exact).abs().max() <= 4
    assert draws.var(0).sum() > 0


def test_gengsrb_bias_shrinks_with_tau():
    """One Poisson latent (rate ~1.17, window 8), ``f = (z - 3)^2``: the bias of the mean gradient against
    the exact one shrinks from tau = 2 to 1 to 0.5 by more than 4 combined standard errors each time, is
    real at tau = 2 (> 50 SE) and at tau = 0.02 is within 4 SE."""
    prior = make_prior("poisson")
    raw = torch.full((1, 1, 1), 0.8, dtype=torch.float64, requires_grad=True)
    posterior = GenGSRB(window=8).posterior(raw, prior)
    exact = torch.autograd.grad((posterior.pmf[0, 0] * (posterior.outcomes - 3.0).square()).sum(), raw)[0].item()
    num = 20_000
    biases = []
    for tau in (2.0, 1.0, 0.5, 0.02):
        params = torch.full((num, 1, 1), 0.8, dtype=torch.float64, requires_grad=True)
        torch.manual_seed(3)
        out = GenGSRB(window=8, tau=tau)(params, lambda z: (z[..., 0] - 3.0).square(), prior, kl=False)
        (grad,) = torch.autograd.grad(out.surrogate * num, params)
        grad = grad.flatten()
        biases.append((grad.mean().item() - exact, grad.std().item() / math.sqrt(num)))
    for (bias, se), (smaller, smaller_se) in zip(biases[:2], biases[1:3], strict=True):
        assert abs(bias) - abs(smaller) > 4 * math.hypot(se, smaller_se), biases
    assert abs(biases[0][0]) > 50 * biases[0][1], biases
    assert abs(biases[-1][0]) <= 4 * biases[-1][1], biases


def test_gengsrb_uses_the_temperature_buffer():
    """Same noise, other tau: other relaxed configurations and gradient; the encoder gets the same KL."""
    prior = make_prior("poisson")
    estimator = GenGSRB(window=8, tau=1.0)
    raw, targets, phi = problem(estimator, prior)
    first = gradient_draws(estimator, prior, raw, targets, phi, 2, kl=False, seed=5)
    again = gradient_draws(estimator, prior, raw, targets, phi, 2, kl=False, seed=5)
    estimator.set_temperature(0.1)
    other = gradient_draws(estimator, prior, raw, targets, phi, 2, kl=False, seed=5)
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)


# --------------------------------------------------------------------------------------------------
# Variance against REINFORCE (the reference implemented here)
# --------------------------------------------------------------------------------------------------


def reinforce_draws(prior, raw, targets, phi, num_draws: int, num_samples: int, seed: int = 1) -> Tensor:
    """Plain REINFORCE: the mean of ``f(z_i) grad log q(z_i)`` over ``num_samples`` i.i.d. exact draws."""
    estimator = StoRB(window=8)  # only for its table
    replicas = raw.expand(num_draws, *raw.shape).clone().requires_grad_()
    posterior = estimator.posterior(replicas.reshape(num_draws * raw.shape[0], *raw.shape[1:]), prior)
    torch.manual_seed(seed)
    z = posterior.sample((num_samples,))
    value = Objective(targets.repeat(num_draws, 1), phi.repeat(num_draws))(z)
    surrogate = (posterior.log_prob(z).sum(-1) * value.detach()).mean(0).mean()
    (grad,) = torch.autograd.grad(surrogate * num_draws, replicas)
    return grad.reshape(num_draws, -1)


def total_variance(draws: Tensor) -> tuple[float, float]:
    """Trace of the covariance of the draws and its standard error (from the per-draw squared deviations)."""
    squared = (draws - draws.mean(0)).square().sum(1)
    return squared.mean().item(), squared.std().item() / math.sqrt(draws.shape[0])


def encoder_draws(estimator, prior, raw, targets, phi, num_draws: int) -> Tensor:
    return gradient_draws(estimator, prior, raw, targets, phi, num_draws, kl=False)[:, : raw.numel()]


def test_variance_ordering_of_the_rao_blackwellised_estimators():
    """One Poisson latent per example (window 8), encoder gradient, no KL (it is exact for all):

    * StoRB without baseline is a Rao-Blackwellisation of single-sample REINFORCE: lower variance;
    * UnOrd without baseline is the Rao-Blackwellisation of StoRB over the order of the set (same k = 2):
      lower variance;
    * UnOrd with its built-in baseline (2 evaluations) beats plain REINFORCE with 2 draws (2 evaluations).

    Each comparison by more than 4 combined standard errors of the variance estimates.
    """
    prior = make_prior("poisson")
    raw, targets, phi = problem(StoRB(window=8), prior, dim=1)
    num = 8000
    storb = total_variance(encoder_draws(StoRB(window=8, builtin_baseline=False), prior, raw, targets, phi, num))
    unord = total_variance(encoder_draws(UnOrd(window=8, builtin_baseline=False), prior, raw, targets, phi, num))
    unord_star = total_variance(encoder_draws(UnOrd(window=8), prior, raw, targets, phi, num))
    rf1 = total_variance(reinforce_draws(prior, raw, targets, phi, num, 1))
    rf2 = total_variance(reinforce_draws(prior, raw, targets, phi, num, 2))
    for low, high in [(storb, rf1), (unord, storb), (unord_star, rf2)]:
        assert high[0] - low[0] > 4 * math.hypot(low[1], high[1]), dict(
            storb=storb, unord=unord, unord_star=unord_star, rf1=rf1, rf2=rf2
        )


def test_reinforce_reference_is_unbiased():
    """The reference of the variance test estimates the exact encoder gradient (so it is a fair one)."""
    prior = make_prior("poisson")
    raw, targets, phi = problem(StoRB(window=8), prior, dim=1)
    exact = exact_gradient(StoRB(window=8), prior, raw, targets, phi, kl=False)[: raw.numel()]
    draws = reinforce_draws(prior, raw, targets, phi, 8000, 2)
    assert z_scores(draws, exact).abs().max() <= 4


# --------------------------------------------------------------------------------------------------
# The interface on every family
# --------------------------------------------------------------------------------------------------

CONTRACT = [(kind, family) for kind in KINDS for family in FAMILIES]
CONTRACT_IDS = [f"{kind}-{family}" for kind, family in CONTRACT]


def event_shape(family: str) -> tuple[int, ...]:
    return (3,) if family in ("categorical", "multinomial") else ()


def assert_exact_outcomes(sample: Tensor, out: EstimatorOutput, family: str) -> None:
    """Every latent value of the sample is an outcome of the posterior's table."""
    outcomes = out.posterior.outcomes.reshape(out.posterior.num_outcomes, -1)
    values = sample.detach().reshape(-1, outcomes.shape[1])
    assert (values.unsqueeze(1) == outcomes.unsqueeze(0)).all(-1).any(-1).all(), f"{family}: {values.unique(dim=0)}"


def expected_evaluations(estimator, dim: int) -> int:
    """The documented training cost in objective evaluations per example."""
    if isinstance(estimator, StoRB):
        return estimator.num_samples * (1 + dim * estimator.num_summed)
    if isinstance(estimator, UnOrd):
        k = estimator.num_samples
        return k if dim == 1 else k + dim * (k - 1)
    return estimator.num_samples * (1 + 2 * dim)


@pytest.mark.parametrize(("kind", "family"), CONTRACT, ids=CONTRACT_IDS)
def test_output_contract(kind: str, family: str):
    estimator = build(kind, family, num_samples=3 if kind != "storb" else 2)
    prior = make_prior(family)
    raw, targets, phi = problem(estimator, prior)
    params = raw.float().requires_grad_()
    decoder = phi.float().requires_grad_()
    objective = Objective(targets.float(), decoder)
    torch.manual_seed(1)
    out = estimator(params, objective, prior)
    num = estimator.num_samples

    assert isinstance(out, EstimatorOutput)
    assert out.sample.shape == (num, BATCH, DIM, *event_shape(family))
    assert out.objective.shape == (num, BATCH) and out.kl.shape == (BATCH,) and out.loss.shape == (BATCH,)
    assert_exact_outcomes(out.sample, out, family)  # exact draws in training too (relaxed only inside)
    assert not out.sample.requires_grad
    torch.testing.assert_close(out.objective, Objective(targets.float(), decoder)(out.sample), rtol=0, atol=0)
    tol = (num + 1) * U32 * (out.objective.abs().mean(0) + out.kl.abs()).max().item()
    torch.testing.assert_close(out.loss, out.objective.mean(0) + out.kl, rtol=0, atol=tol)
    torch.testing.assert_close(out.surrogate, out.loss.mean(), rtol=(BATCH + 2) * U32, atol=tol)
    assert (out.kl >= -tol).all() and torch.isfinite(out.kl).all()
    assert set(out.stats) >= {"trunc_n", "trunc_tail_mass", "objective_evals", "rb_mass"}
    assert all(torch.isfinite(v) and not v.requires_grad for v in out.stats.values())
    # the cost is as documented, and as reported
    assert sum(objective.calls) == expected_evaluations(estimator, DIM) == out.stats["objective_evals"].item()

    out.surrogate.backward()
    assert torch.isfinite(params.grad).all() and (params.grad != 0).any()
    assert torch.isfinite(decoder.grad).all() and (decoder.grad != 0).any()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("family", ["poisson", "multinomial"])
def test_kl_false_gives_zero_kl(kind: str, family: str):
    estimator = build(kind, family)
    prior = make_prior(family)
    raw, targets, phi = problem(estimator, prior)
    params = raw.requires_grad_()
    out = estimator(params, Objective(targets, phi), prior, kl=False)
    assert torch.equal(out.kl, torch.zeros(BATCH, dtype=out.kl.dtype))
    torch.testing.assert_close(out.loss, out.objective.mean(0), rtol=0, atol=0)
    out.surrogate.backward()
    assert torch.isfinite(params.grad).all()


@pytest.mark.parametrize(("kind", "family"), CONTRACT, ids=CONTRACT_IDS)
def test_eval_mode_draws_exact_samples_once(kind: str, family: str):
    """Eval: ``num_samples`` exact draws, one objective call at them, gradient = KL's + decoder's."""
    estimator = build(kind, family, num_samples=3).eval()
    prior = make_prior(family)
    raw, targets, phi = problem(estimator, prior)
    params = raw.requires_grad_()
    objective = Objective(targets, phi)
    out = estimator(params, objective, prior)
    assert objective.calls == [3] and out.stats["objective_evals"].item() == 3
    assert out.sample.shape == (3, BATCH, DIM, *event_shape(family))
    assert_exact_outcomes(out.sample, out, family)
    torch.testing.assert_close(out.surrogate, out.loss.mean(), rtol=0, atol=0)
    out.surrogate.backward()
    (kl_grad,) = torch.autograd.grad(estimator(params, objective, prior).kl.mean(), params)
    torch.testing.assert_close(params.grad, kl_grad)


def test_unord_with_one_dimension_reuses_the_reported_samples():
    """D = 1: the set's configurations are the reported rows, so UnOrd costs k evaluations in one call."""
    estimator = UnOrd(window=8, num_samples=4)
    prior = make_prior("poisson")
    raw, targets, phi = problem(estimator, prior, dim=1)
    objective = Objective(targets, phi)
    out = estimator(raw, objective, prior)
    assert objective.calls == [4]
    # the reported rows are four distinct categories per example (sampling without replacement)
    assert (out.sample[:, :, 0].sort(0).values.diff(dim=0) > 0).all()


@pytest.mark.parametrize("kind", KINDS)
def test_state_dict_round_trip(kind: str):
    """Only ``tau`` is state; a loaded estimator draws exactly what the saved one draws from the same seed."""
    prior = make_prior("poisson")
    source = KINDS[kind](window=8, tau=0.3)
    source.set_temperature(0.07)
    buffer = io.BytesIO()
    torch.save(source.state_dict(), buffer)
    buffer.seek(0)
    target = KINDS[kind](window=8, tau=1.0)
    result = target.load_state_dict(torch.load(buffer, weights_only=True))
    assert not result.missing_keys and not result.unexpected_keys and list(target.state_dict()) == ["tau"]
    assert target.tau.item() == torch.tensor(0.07).item()
    raw, targets, phi = problem(source, prior)
    first = gradient_draws(source, prior, raw, targets, phi, 3, kl=True, seed=2)
    second = gradient_draws(target, prior, raw, targets, phi, 3, kl=True, seed=2)
    assert torch.equal(first, second)


# --------------------------------------------------------------------------------------------------
# Bad input fails early, naming the value and what is accepted
# --------------------------------------------------------------------------------------------------


class SpyObjective:
    """Records whether it was called; returns ``(S', B)`` or a fixed (wrong) shape."""

    def __init__(self, shape=None):
        self.calls = 0
        self.shape = shape

    def __call__(self, z: Tensor) -> Tensor:
        self.calls += 1
        value = scalar(z).sum(-1)
        return value if self.shape is None else value.sum() * torch.ones(self.shape)


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "2", None], ids=repr)
def test_bad_num_summed(value):
    with pytest.raises(ValueError, match=rf"num_summed.*integer >= 1, got {re.escape(repr(value))}"):
        StoRB(num_summed=value)


@pytest.mark.parametrize("value", [0, 1, MAX_SET_SIZE + 1, 2.0, True, "3"], ids=repr)
def test_bad_unord_set_size(value):
    with pytest.raises(
        ValueError,
        match=rf"num_samples \(the set size k of UnOrd.*\) must be an integer in \[2, 6\], got {re.escape(repr(value))}",
    ):
        UnOrd(num_samples=value)


@pytest.mark.parametrize("cls", [StoRB, UnOrd])
@pytest.mark.parametrize("value", [1, 0, "yes", None], ids=repr)
def test_bad_builtin_baseline(cls, value):
    with pytest.raises(ValueError, match=rf"builtin_baseline must be a bool.*got {re.escape(repr(value))}"):
        cls(builtin_baseline=value)


@pytest.mark.parametrize("cls", [StoRB, GenGSRB])
@pytest.mark.parametrize("value", [0, -2, 1.5, True], ids=repr)
def test_bad_num_samples(cls, value):
    with pytest.raises(ValueError, match=rf"num_samples.*integer >= 1.*got {re.escape(repr(value))}"):
        cls(num_samples=value)


@pytest.mark.parametrize("cls", list(KINDS.values()), ids=list(KINDS))
@pytest.mark.parametrize("tau", [0, -1.0, math.nan, math.inf], ids=repr)
def test_bad_tau(cls, tau):
    with pytest.raises(ValueError, match=rf"tau.*> 0.*got {re.escape(repr(tau))}"):
        cls(tau=tau)


@pytest.mark.parametrize("cls", list(KINDS.values()), ids=list(KINDS))
@pytest.mark.parametrize(
    ("window", "pattern"),
    [
        (0, r"window must hold at least 2 outcomes.*got 0"),
        ((5, 3), r"window must hold at least 2 outcomes"),
        ("8", r"got '8'"),
    ],
    ids=repr,
)
def test_bad_window(cls, window, pattern):
    with pytest.raises(ValueError, match=pattern):
        cls(window=window)


@pytest.mark.parametrize(
    ("estimator", "family", "pattern"),
    [
        (
            StoRB(window=4, num_summed=4),
            "poisson",
            r"num_summed=4 .*poisson posterior on window \[0, 3\] has n=4.*num_summed <= n - 1 = 3",
        ),
        (StoRB(num_summed=3), "categorical", r"num_summed=3 .*categorical posterior on its outcome table has n=3"),
        (UnOrd(window=3, num_samples=4), "geometric", r"set size k=4.*geometric posterior on window \[0, 2\] has n=3"),
        (UnOrd(num_samples=4), "categorical", r"set size k=4.*categorical.*n=3.*2 <= k <= min\(n, 6\)"),
    ],
    ids=["storb-poisson", "storb-categorical", "unord-geometric", "unord-categorical"],
)
def test_table_too_small_fails_before_the_objective(estimator, family, pattern):
    prior = make_prior(family)
    objective = SpyObjective()
    with pytest.raises(ValueError, match=pattern):
        estimator(torch.zeros(2, 1, estimator.raw_size(prior)), objective, prior)
    assert objective.calls == 0


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("family", "shape"), [("poisson", (4, 2, 2)), ("poisson", (4, 2)), ("categorical", (4, 2, 4))], ids=repr
)
def test_wrong_encoder_shape_fails_before_the_objective(kind, family, shape):
    estimator = build(kind, family)
    prior = make_prior(family)
    objective = SpyObjective()
    expected = prior.raw_size
    with pytest.raises(ValueError, match=rf"\(batch, latent_dim, {expected}\).*got {re.escape(str(shape))}"):
        estimator(torch.zeros(shape), objective, prior)
    assert objective.calls == 0


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("family", ["categorical", "multinomial"])
def test_window_with_a_vector_family_fails_before_the_objective(kind, family):
    estimator = KINDS[kind](window=4)
    prior = make_prior(family)
    objective = SpyObjective()
    with pytest.raises(ValueError, match=rf"{family}.*takes no window, got"):
        estimator(torch.zeros(2, 1, 3), objective, prior)
    assert objective.calls == 0


@pytest.mark.parametrize("kind", KINDS)
def test_objective_of_wrong_shape(kind):
    """At the samples: the interface's check; at the configurations: they must be ``(S', B)`` as well."""
    estimator = build(kind, "poisson", num_samples=2)
    prior = make_prior("poisson")
    params = torch.zeros(4, 3, 1)
    with pytest.raises(ValueError, match=r"\(2, 4\).*got \(3, 4\)"):
        estimator(params, SpyObjective((3, 4)), prior)
    # right at the samples (2 rows), wrong at the configurations (more rows)
    with pytest.raises(ValueError, match=r"for any number of samples.*configurations of 4 examples.*got \(2, 4\)"):
        estimator(params, SpyObjective((2, 4)), prior)


# --------------------------------------------------------------------------------------------------
# Integration: the toy task and the VAE train with every estimator
# --------------------------------------------------------------------------------------------------

TRAIN_ESTIMATORS = {
    "storb": lambda window: StoRB(window=window),
    "unord": lambda window: UnOrd(window=window, num_samples=3),
    "gengsrb": lambda window: GenGSRB(window=window, tau=1.0),
}


def quiet_trainer(**kwargs) -> pl.Trainer:
    options = {"logger": False, "enable_checkpointing": False, "enable_progress_bar": False}
    return pl.Trainer(enable_model_summary=False, accelerator="cpu", **{**options, **kwargs})


@pytest.mark.parametrize("kind", TRAIN_ESTIMATORS)
def test_toy_task_trains_and_round_trips_through_a_checkpoint(kind, tmp_path):
    torch.manual_seed(0)
    estimator = TRAIN_ESTIMATORS[kind](60)
    task = ToyTask(estimator, Prior("poisson", {"rate": 20.0}), init={"rate": 10.0}, grad_every=5)
    start = task.raw.detach().clone()
    schedule = TemperatureSchedule(kind="exponential", tau0=1.0, tau_min=0.1, rate=0.1)
    trainer = quiet_trainer(max_steps=10, limit_val_batches=1, num_sanity_val_steps=0, callbacks=[schedule])
    data = ToyTargets(num_targets=20)
    trainer.fit(task, datamodule=data)
    assert math.isfinite(trainer.callback_metrics["train/loss"])
    statistics = task.gradient_statistics(data.targets)  # what grad_every=5 logs
    assert all(math.isfinite(value) for value in statistics.values()), statistics
    if kind != "gengsrb":  # unbiased: the 100 draws' mean is the exact gradient of the (untruncated) toy loss
        assert statistics["grad_bias"] <= 4 * statistics["grad_bias_stderr"], statistics
    (result,) = trainer.validate(task, datamodule=data, verbose=False)
    assert math.isfinite(result["val/loss"])
    assert torch.isfinite(task.raw).all() and not torch.equal(task.raw.detach(), start)
    assert estimator.tau.item() < 1.0  # the schedule writes the buffer (GenGSRB relaxes with it)
    path = tmp_path / "toy.ckpt"
    trainer.save_checkpoint(path)
    loaded = ToyTask.load_from_checkpoint(path, weights_only=False)
    assert type(loaded.estimator) is type(estimator)
    assert repr(loaded.estimator) == repr(estimator)
    assert torch.equal(loaded.raw, task.raw) and loaded.estimator.tau.item() == estimator.tau.item()


@pytest.mark.parametrize("kind", TRAIN_ESTIMATORS)
def test_vae_trains_on_digits(kind):
    torch.manual_seed(0)
    model = digits_vae(TRAIN_ESTIMATORS[kind](16), iw_samples=5)
    trainer = quiet_trainer(max_steps=3, limit_val_batches=1, num_sanity_val_steps=0)
    data = Digits(batch_size=32)
    trainer.fit(model, datamodule=data)
    metrics = dict(trainer.callback_metrics)
    assert metrics["train/objective_evals"].item() == expected_evaluations(model.estimator, 4)
    (result,) = trainer.validate(model, datamodule=data, verbose=False)
    for name, value in {**metrics, **result}.items():
        assert math.isfinite(value), name
    assert {"train/loss", "train/kl", "train/recon", "val/loss"} <= set(metrics) | set(result)
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("family", COUNT_FAMILIES)
def test_count_families_on_their_windows_train_a_toy_step(family):
    """Every count family's table (incl. folded edges) gives finite gradients for all three estimators."""
    prior = make_prior(family)
    for kind in KINDS:
        estimator = build(kind, family)
        raw, targets, phi = problem(estimator, prior)
        draws = gradient_draws(estimator, prior, raw, targets, phi, 20, kl=True)
        assert torch.isfinite(draws).all(), kind
