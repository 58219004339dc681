"""Score-function estimators (REINFORCE, RF*, NVIL, MuProp, VIMCO): unbiasedness, power, variance, contract.

Unbiasedness: the mean of ``M`` gradient draws with respect to the encoder output must lie within 4
standard errors (estimated from the same draws) of the exact gradient computed by enumeration, for every
coordinate. The problems are in ``score_function_testing``; everything there is float64.
"""

from __future__ import annotations

import copy
import io
import math
import re

import pytest
import pytorch_lightning as pl
import torch
from estimators.estimator_testing import FAMILIES, U32, digits_vae, make_prior, quadratic_objective, random_params
from estimators.score_function_testing import (
    exact_gradient,
    exact_loss,
    exact_score_and_kl_gradients,
    exact_vimco_loss,
    gradient_draws,
    problem,
    variance_and_error,
    z_scores,
)
from torch.distributions import kl_divergence

from gengs_lightning.data import Digits, ToyTargets
from gengs_lightning.distributions import (
    DiscreteFamily,
    Prior,
    TruncatedMultinomial,
    UntruncatedPosterior,
    UntruncatedPrior,
    Window,
    untruncated_kl,
)
from gengs_lightning.estimators import NVIL, VIMCO, Estimator, MuProp, Reinforce, ReinforceLOO, ScoreFunctionEstimator
from gengs_lightning.models import ToyTask

#: Estimators by name: class, fixed arguments, and the sample counts of the contract tests.
ESTIMATORS = {
    "reinforce": (Reinforce, {}, (1, 3)),
    "reinforce_none": (Reinforce, {"baseline": "none"}, (1, 3)),
    "loo": (ReinforceLOO, {}, (2, 3)),
    "nvil": (NVIL, {}, (1, 3)),
    "muprop": (MuProp, {}, (1, 3)),
    "vimco": (VIMCO, {}, (2, 3)),
}
NAMES = list(ESTIMATORS)
CLASSES = [Reinforce, ReinforceLOO, NVIL, MuProp, VIMCO]
CLASS_IDS = [cls.__name__ for cls in CLASSES]
BATCH, DIM = 4, 2
TRUNCATION_WINDOW = 8  # the Poisson problem's truncated window [0, 7]


def build(name: str, num_samples: int | None = None, truncated: bool = False, window=None, **kwargs):
    """The named estimator; with ``truncated``, on ``window`` (default: the family's first test window)."""
    cls, fixed, counts = ESTIMATORS[name]
    truncation = ("auto" if window is None else window) if truncated else None
    return cls(**{**fixed, **kwargs, "num_samples": num_samples or counts[0], "truncation": truncation})


def family_window(family: str):
    return FAMILIES[family][1][0]


def event_shape(family: str) -> tuple[int, ...]:
    return (3,) if family in ("categorical", "multinomial") else ()


# --------------------------------------------------------------------------------------------------
# Unbiasedness against enumeration
# --------------------------------------------------------------------------------------------------


def prepared(name: str, truncated: bool, num_samples: int | None = None) -> ScoreFunctionEstimator:
    """A float64 estimator in a non-trivial state: a nonzero moving average, a random input-dependent NVIL
    baseline with nonzero centre (its normaliser ``max(1, sqrt(v))`` stays 1)."""
    window = TRUNCATION_WINDOW if truncated else None
    counts = {"loo": 3, "vimco": 2}
    estimator = build(name, num_samples or counts.get(name, 1), truncated, window).double()
    with torch.no_grad():
        if name == "reinforce":
            estimator.baseline_mean.fill_(6.0)
            estimator.baseline_updates.fill_(3)
        if name == "nvil":
            generator = torch.Generator().manual_seed(1)
            for parameter in estimator.parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype))
            estimator.signal_mean.fill_(2.0)
            estimator.signal_var.fill_(0.5)
            estimator.signal_updates.fill_(4)
    return estimator


def assert_unbiased(draws: torch.Tensor, exact: torch.Tensor, what: str) -> None:
    z = z_scores(draws, exact)
    assert (z.abs() <= 4).all(), (
        f"{what}: mean gradient off the exact one by {z.abs().max():.2f} SE\nmean {draws.mean(0).flatten()}\n"
        f"exact {exact.flatten()}"
    )


PROBLEMS = [
    ("poisson", True, False),
    ("poisson", False, False),
    ("categorical", True, False),
    ("poisson", True, True),
]
PROBLEM_IDS = [f"{f}-{'kl' if kl else 'nokl'}-{'truncated' if t else 'untruncated'}" for f, kl, t in PROBLEMS]
NUM_DRAWS = 5_000


@pytest.mark.parametrize(("family", "kl", "truncated"), PROBLEMS, ids=PROBLEM_IDS)
@pytest.mark.parametrize("name", [n for n in NAMES if n != "vimco"])
def test_gradient_is_unbiased_for_the_expected_loss(name, family, kl, truncated):
    """``E[estimate] = d (E_q f + KL) / d raw`` by enumeration (untruncated: window of 1 - 1e-12)."""
    torch.manual_seed(10)
    prior, raw, objective = problem(family)
    estimator = prepared(name, truncated)
    draws = gradient_draws(estimator, raw, objective, prior, kl, NUM_DRAWS)
    window = TRUNCATION_WINDOW if truncated else None
    exact = exact_gradient(lambda r: exact_loss(prior, r, objective, kl, truncated, window), raw)
    assert_unbiased(draws, exact, f"{name} on {family}")


VIMCO_PROBLEMS = [*[(f, kl, t, 2) for f, kl, t in PROBLEMS], ("poisson", False, True, 2), ("poisson", True, True, 3)]


@pytest.mark.parametrize(
    ("family", "kl", "truncated", "num_samples"),
    VIMCO_PROBLEMS,
    ids=[f"{f}-{'kl' if kl else 'nokl'}-{'truncated' if t else 'untruncated'}-S{s}" for f, kl, t, s in VIMCO_PROBLEMS],
)
def test_vimco_gradient_is_unbiased_for_the_multi_sample_bound(family, kl, truncated, num_samples):
    """``E[estimate] = -d E[log (1/S) sum_s w_s] / d raw`` by enumerating all ``S``-tuples of configurations."""
    torch.manual_seed(11)
    prior, raw, objective = problem(family)
    estimator = prepared("vimco", truncated, num_samples)
    draws = gradient_draws(estimator, raw, objective, prior, kl, NUM_DRAWS)
    window = TRUNCATION_WINDOW if truncated else None
    exact = exact_gradient(lambda r: exact_vimco_loss(prior, r, objective, kl, num_samples, truncated, window), raw)
    assert_unbiased(draws, exact, f"VIMCO({num_samples}) on {family}")


def test_nvil_normalisation_divides_the_score_part_by_the_running_std():
    """With running variance 4 the expectation is ``d E_q f / d raw / 2 + d KL / d raw`` (the KL is not scaled)."""
    torch.manual_seed(12)
    prior, raw, objective = problem("poisson")
    estimator = prepared("nvil", truncated=False)
    estimator.signal_var.fill_(4.0)
    draws = gradient_draws(estimator, raw, objective, prior, True, NUM_DRAWS)
    score, kl = exact_score_and_kl_gradients(prior, raw, objective, truncated=False)
    assert_unbiased(draws, score / 2 + kl, "NVIL with signal scale 2")
    # ... and not the unscaled gradient (the check resolves the factor).
    assert z_scores(draws, score + kl).abs().max() > 8


class NoScore(Reinforce):
    """Drops the score term: only the KL's gradient reaches the encoder."""

    def learning_signal(self, draw):
        return torch.zeros_like(draw.value)


class OwnSampleBaseline(ReinforceLOO):
    """A baseline that includes the sample itself (the mean of all samples): biased by ``(S - 1) / S``."""

    def learning_signal(self, draw):
        return draw.value - draw.value.mean(0, keepdim=True)


class MuPropWithoutAnalyticTerm(MuProp):
    """MuProp without ``f'(z_bar) . grad E_q[z]``: the control variate's mean is not added back."""

    def control_term(self, draw):
        super().control_term(draw)
        return 0.0


class VIMCOWithoutScore(VIMCO):
    """VIMCO with only the weighted ``grad log w`` part."""

    def score_term(self, draw):
        return torch.zeros_like(draw.kl)


BROKEN = {
    "no_score": (lambda: NoScore(baseline="none"), None),
    "own_sample_baseline": (lambda: OwnSampleBaseline(num_samples=2), None),
    "muprop_without_analytic_term": (MuPropWithoutAnalyticTerm, None),
    "vimco_without_score": (lambda: VIMCOWithoutScore(num_samples=2), 2),
}


@pytest.mark.parametrize("broken", BROKEN)
def test_the_unbiasedness_check_detects_biased_estimators(broken):
    """The same check on biased variants fails by far more than its 4 SE threshold."""
    torch.manual_seed(13)
    make, vimco_samples = BROKEN[broken]
    prior, raw, objective = problem("poisson")
    draws = gradient_draws(make().double(), raw, objective, prior, True, NUM_DRAWS)
    if vimco_samples:
        exact = exact_gradient(lambda r: exact_vimco_loss(prior, r, objective, True, vimco_samples, False), raw)
    else:
        exact = exact_gradient(lambda r: exact_loss(prior, r, objective, True, False), raw)
    z = torch.nan_to_num(z_scores(draws, exact), nan=0.0)  # deterministic draws equal to the target: no evidence
    assert z.abs().max() > 8, f"{broken}: largest deviation only {z.abs().max():.2f} SE"


def test_leave_one_out_baselines_reduce_the_variance_of_plain_reinforce():
    """Total gradient variance with ``S = 4``: RF* below REINFORCE without baseline by more than 4 SE each."""
    torch.manual_seed(14)
    prior, raw, objective = problem("poisson")
    loo = gradient_draws(ReinforceLOO(num_samples=4).double(), raw, objective, prior, False, 2 * NUM_DRAWS)
    plain = gradient_draws(
        Reinforce(num_samples=4, baseline="none").double(), raw, objective, prior, False, 2 * NUM_DRAWS
    )
    (var_loo, err_loo), (var_plain, err_plain) = variance_and_error(loo), variance_and_error(plain)
    assert var_loo + 4 * err_loo < var_plain - 4 * err_plain, (var_loo, err_loo, var_plain, err_plain)


# --------------------------------------------------------------------------------------------------
# KL, posterior, prior
# --------------------------------------------------------------------------------------------------

KL_CASES = {
    "poisson": ({"rate": 2.0}, [[0.3], [-2.0], [4.0]]),
    "geometric": ({"probs": 0.25}, [[0.0], [-3.0], [2.5]]),
    "negative_binomial": ({"total_count": 3.0, "probs": 0.5}, [[-1.0], [0.5], [1.5]]),
    "binomial": ({"total_count": 20, "probs": 0.3}, [[-1.0], [0.5], [6.0]]),
    "categorical": ({"probs": [0.7, 0.2, 0.1]}, [[0.0, 1.0, -1.0], [2.0, -3.0, 0.5], [0.0, 0.0, 0.0]]),
    "multinomial": (
        {"total_count": 3, "probs": [0.7, 0.2, 0.1]},
        [[0.0, 1.0, -1.0], [2.0, -3.0, 0.5], [1.0, 0.0, 0.0]],
    ),
}


@pytest.mark.parametrize("family", KL_CASES)
def test_untruncated_kl_matches_enumeration(family):
    """The closed forms equal ``sum_k q_k log(q_k / p_k)`` in float64 over the whole support.

    Count families: over ``0 .. n`` with ``n`` holding ``1 - 1e-12`` of each posterior, with torch's
    pmfs; the mass left out moves the sum by about 1e-12 times a log-ratio of order 10, so the tolerance
    is 1e-9 (1 + KL). Multinomial: every count vector (the package's table).
    """
    params, raws = KL_CASES[family]
    prior = Prior(family, params).double()
    raw = torch.tensor(raws, dtype=torch.float64)
    closed = untruncated_kl(raw, prior)
    if family == "multinomial":
        q = TruncatedMultinomial(3, logits=raw)
        expected = kl_divergence(q, prior.truncated(None))
    elif family == "categorical":
        probs = prior.truncated(None).probs  # float32-rounded: normalise in float64
        q, p = torch.softmax(raw, -1), probs / probs.sum()
        expected = (q * (q.log() - p.log())).sum(-1)
    else:
        high = prior.posterior(raw, Window(0, 0)).widen(1e-12).window.high
        k = torch.arange(high + 1, dtype=torch.float64)[:, None]
        q = prior.untruncated_posterior(raw).log_prob(k)
        p = prior.untruncated().log_prob(k)
        expected = (q.exp() * (q - p)).sum(0)
    torch.testing.assert_close(closed, expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("family", ["poisson", "geometric", "binomial", "categorical"])
def test_untruncated_kl_matches_torch_where_torch_has_one(family):
    params, raws = KL_CASES[family]
    prior = Prior(family, params).double()
    raw = torch.tensor(raws, dtype=torch.float64)
    expected = kl_divergence(prior.untruncated_posterior(raw), prior.untruncated())
    torch.testing.assert_close(untruncated_kl(raw, prior), expected, rtol=1e-10, atol=1e-12)
    if family == "categorical":
        index_prior = Prior(family, {**params, "one_hot": False}).double()
        expected = kl_divergence(index_prior.untruncated_posterior(raw), index_prior.untruncated())
        torch.testing.assert_close(untruncated_kl(raw, index_prior), expected, rtol=1e-10, atol=1e-12)


def test_untruncated_binomial_kl_stays_finite_where_torch_breaks():
    """At logits +-30 in float32 torch's binomial KL is -inf or NaN in value or gradient; ours is the float64 value."""
    prior = Prior("binomial", {"total_count": 20, "probs": 0.3})
    raw = torch.tensor([[-30.0], [30.0]], requires_grad=True)
    kl = untruncated_kl(raw, prior)
    kl.sum().backward()
    assert torch.isfinite(kl).all() and torch.isfinite(raw.grad).all()
    reference = untruncated_kl(raw.detach().double(), prior.double())
    # float32: a few roundings of terms of magnitude 20 * 30 = 600
    torch.testing.assert_close(kl.double(), reference, rtol=0, atol=8 * U32 * 600)
    torch_kl = kl_divergence(prior.untruncated_posterior(raw), prior.untruncated())
    assert not torch.isfinite(torch_kl).all() or not torch.isfinite(torch.autograd.grad(torch_kl.sum(), raw)[0]).all()


@pytest.mark.parametrize("family", list(FAMILIES))
def test_untruncated_posterior_wraps_the_torch_family(family):
    prior = make_prior(family)
    raw = random_params(Reinforce(), prior, BATCH, DIM).detach()
    posterior = Reinforce().posterior(raw, prior)
    base = prior.untruncated_posterior(raw)
    assert isinstance(posterior, UntruncatedPosterior) and type(posterior.base) is type(base)
    assert posterior.batch_shape == (BATCH, DIM) and posterior.event_shape == event_shape(family)
    torch.testing.assert_close(posterior.mean, base.mean, rtol=0, atol=0)
    torch.testing.assert_close(posterior.variance, base.variance, rtol=0, atol=0)
    sample = posterior.sample((5,))
    assert sample.shape == (5, BATCH, DIM, *event_shape(family))
    torch.testing.assert_close(posterior.log_prob(sample), base.log_prob(sample), rtol=0, atol=0)
    wide = posterior.widen()
    expected = prior.posterior(raw, Window(0, 0)).widen() if prior.family.truncatable else prior.posterior(raw, None)
    torch.testing.assert_close(wide.log_pmf, expected.log_pmf, rtol=0, atol=0)
    assert posterior.expand((3, BATCH, DIM)).sample().shape == (3, BATCH, DIM, *event_shape(family))


@pytest.mark.parametrize("truncated", [False, True], ids=["untruncated", "truncated"])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_prior_distribution_and_raw_like(family, truncated):
    """``prior_distribution`` is the untruncated prior or its table on the window; ``raw_like`` gives KL 0."""
    prior = make_prior(family)
    estimator = build("reinforce", truncated=truncated, window=family_window(family))
    raw = estimator.raw_like(prior).expand(BATCH, DIM, estimator.raw_size(prior))
    posterior = estimator.posterior(raw, prior)
    prior_dist = estimator.prior_distribution(posterior, prior)
    if truncated:
        assert isinstance(posterior, DiscreteFamily) and isinstance(prior_dist, DiscreteFamily)
        assert posterior.window == prior_dist.window == prior.resolve_window(estimator.window)
        torch.testing.assert_close(prior_dist.log_pmf, prior.truncated(posterior.window).log_pmf)
    else:
        untruncated = prior.untruncated()
        assert isinstance(prior_dist, UntruncatedPrior) and type(prior_dist.base) is type(untruncated)
        torch.testing.assert_close(prior_dist.mean, untruncated.mean)
    torch.testing.assert_close(posterior.mean, prior_dist.mean.expand_as(posterior.mean), rtol=1e-5, atol=1e-5)
    kl = estimator.latent_kl(raw, posterior, prior)
    assert kl.abs().max() <= 1e-5, f"KL between q = p is {kl}"


def test_toy_exact_loss_works_with_the_untruncated_posterior():
    """``ToyTask.exact_loss`` widens the posterior: for Poisson it is ``rate + (rate - t)^2`` (closed form)."""
    task = ToyTask(Reinforce(), Prior("poisson", {"rate": 20.0}), init={"rate": 12.0})
    targets = ToyTargets.draw(task.target.untruncated(), 50, seed=0)
    rate = torch.nn.functional.softplus(task.raw).item()
    expected = (rate + (rate - targets) ** 2).mean()
    assert task.exact_loss(targets).item() == pytest.approx(expected.item(), rel=1e-6)


# --------------------------------------------------------------------------------------------------
# The interface contract on every family
# --------------------------------------------------------------------------------------------------


def run(name, family, num_samples, truncated, training=True, kl=True, seed=0, objective=quadratic_objective):
    estimator = build(name, num_samples, truncated, family_window(family))
    estimator.train(training)
    prior = make_prior(family)
    params = random_params(estimator, prior, BATCH, DIM, seed=seed)
    torch.manual_seed(seed + 1)
    out = estimator(params, objective, prior, kl=kl)
    return estimator, prior, params, out


def assert_exact_outcomes(family: str, sample: torch.Tensor, estimator, out) -> None:
    assert torch.equal(sample, sample.round()), f"non-integer samples {sample.unique()}"
    if family in ("categorical", "multinomial"):
        total = 1 if family == "categorical" else make_prior(family).structural["total_count"]
        assert (sample >= 0).all() and torch.equal(sample.sum(-1), torch.full(sample.shape[:-1], float(total)))
        return
    low, high = 0, math.inf
    if estimator.truncated:
        low, high = out.posterior.window.low, out.posterior.window.high
    if family == "binomial":
        high = min(high, make_prior(family).structural["total_count"])
    assert sample.min() >= low and sample.max() <= high, f"samples {sample.unique().tolist()} outside [{low}, {high}]"


def vimco_loss(estimator, prior, out) -> torch.Tensor:
    """``log S - logsumexp_s [-f_s + log p(z_s) - log q(z_s)]`` recomputed from the output."""
    prior_dist = estimator.prior_distribution(out.posterior, prior)
    log_ratio = (prior_dist.log_prob(out.sample) - out.posterior.log_prob(out.sample)).sum(-1)
    log_w = -out.objective + log_ratio
    return math.log(out.objective.shape[0]) - log_w.logsumexp(0), log_w


def check_loss(name, estimator, prior, out) -> None:
    num_samples = out.objective.shape[0]
    if name == "vimco":
        expected, log_w = vimco_loss(estimator, prior, out)
        tol = (num_samples + 4) * U32 * (log_w.abs().amax(0) + 1)  # log-sum-exp of S terms and the sums
    else:
        expected = out.objective.mean(0) + out.kl
        tol = (num_samples + 1) * U32 * (out.objective.abs().mean(0) + out.kl.abs())
    assert ((out.loss - expected).abs() <= tol).all(), f"loss {out.loss} vs {expected}"


CONTRACT = [
    (name, family, truncated, num_samples)
    for name in NAMES
    for family in FAMILIES
    for truncated in (False, True)
    for num_samples in ESTIMATORS[name][2]
]


@pytest.mark.parametrize(
    ("name", "family", "truncated", "num_samples"),
    CONTRACT,
    ids=[f"{n}-{f}-{'truncated' if t else 'untruncated'}-S{s}" for n, f, t, s in CONTRACT],
)
def test_output_contract(name, family, truncated, num_samples):
    estimator, prior, params, out = run(name, family, num_samples, truncated)
    assert isinstance(estimator, Estimator) and estimator.raw_size(prior) == prior.raw_size
    assert out.sample.shape == (num_samples, BATCH, DIM, *event_shape(family))
    assert out.objective.shape == (num_samples, BATCH) and out.kl.shape == (BATCH,) and out.loss.shape == (BATCH,)
    torch.testing.assert_close(out.objective, quadratic_objective(out.sample), rtol=0, atol=0)
    assert_exact_outcomes(family, out.sample, estimator, out)
    assert torch.isfinite(out.kl).all() and (out.kl >= -8 * U32 * (1 + out.kl.abs())).all()
    check_loss(name, estimator, prior, out)
    assert out.surrogate.dim() == 0 and torch.isfinite(out.surrogate)
    assert out.surrogate.item() == out.loss.mean().item()  # the score terms are zero-valued
    assert all(torch.isfinite(v) and not v.requires_grad and v.dim() == 0 for v in out.stats.values())
    if truncated:
        assert out.stats["trunc_n"].item() == out.posterior.num_outcomes
    else:
        assert "trunc_n" not in out.stats

    out.surrogate.backward()
    assert params.grad is not None and params.grad.shape == params.shape
    assert torch.isfinite(params.grad).all() and params.grad.abs().sum() > 0


@pytest.mark.parametrize("truncated", [False, True], ids=["untruncated", "truncated"])
@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("name", NAMES)
def test_eval_mode_reports_exact_samples_without_gradient_tricks(name, family, truncated):
    """Eval: exact outcomes, the reported loss as the surrogate, only the KL's gradient, no state change."""
    estimator = build(name, ESTIMATORS[name][2][-1], truncated, family_window(family)).eval()
    state = copy.deepcopy(estimator.state_dict())
    prior = make_prior(family)
    params = random_params(estimator, prior, BATCH, DIM)
    out = estimator(params, quadratic_objective, prior)
    assert_exact_outcomes(family, out.sample, estimator, out)
    check_loss(name, estimator, prior, out)
    assert torch.equal(out.surrogate, out.loss.mean())
    if name != "vimco":  # the loss's own gradient: the KL's (samples carry none)
        (grad,) = torch.autograd.grad(out.surrogate, params, retain_graph=True)
        (kl_grad,) = torch.autograd.grad(out.kl.mean(), params)
        torch.testing.assert_close(grad, kl_grad, rtol=0, atol=0)
    assert all(torch.equal(state[key], value) for key, value in estimator.state_dict().items())


def test_without_kl_the_kl_is_zero_and_the_loss_is_the_objective():
    for name in NAMES:
        estimator, _, _, out = run(name, "poisson", ESTIMATORS[name][2][-1], False, kl=False)
        assert torch.equal(out.kl, torch.zeros(BATCH))
        expected = out.objective.mean(0) if name != "vimco" else -(-out.objective).logsumexp(0) + math.log(3)
        torch.testing.assert_close(out.loss, expected, rtol=4 * U32, atol=0)


# --------------------------------------------------------------------------------------------------
# State: moving averages, NVIL's baseline, checkpoints
# --------------------------------------------------------------------------------------------------


def test_moving_average_baseline_updates_only_in_training():
    estimator, prior, params, first = run("reinforce", "poisson", 3, False)
    assert first.stats["baseline"].item() == 0.0  # nothing seen yet
    mean_1 = first.objective.mean().item()
    assert estimator.baseline_mean.item() == pytest.approx(mean_1, rel=U32)  # the first step sets it
    assert estimator.baseline_updates.item() == 1

    estimator.eval()
    state = copy.deepcopy(estimator.state_dict())
    estimator(params, quadratic_objective, prior)
    assert all(torch.equal(state[key], value) for key, value in estimator.state_dict().items())

    estimator.train()
    second = estimator(params, quadratic_objective, prior)
    assert second.stats["baseline"].item() == pytest.approx(mean_1, rel=U32)  # used before the update
    expected = 0.99 * mean_1 + 0.01 * second.objective.mean().item()
    assert estimator.baseline_mean.item() == pytest.approx(expected, rel=4 * U32)
    assert estimator.baseline_updates.item() == 2


def test_nvil_running_moments_update_only_in_training():
    estimator, prior, params, first = run("nvil", "poisson", 3, False)
    learned = estimator.baseline(first.posterior).detach()  # zero network output, zero constant
    assert torch.equal(learned, torch.zeros(BATCH))
    residual = first.objective - learned
    assert estimator.signal_mean.item() == pytest.approx(residual.mean().item(), rel=U32)
    assert estimator.signal_var.item() == pytest.approx(residual.var(unbiased=False).item(), rel=8 * U32)
    estimator.eval()
    state = copy.deepcopy(estimator.state_dict())
    estimator(params, quadratic_objective, prior)
    assert all(torch.equal(state[key], value) for key, value in estimator.state_dict().items())
    estimator.train()
    estimator(params, quadratic_objective, prior)
    assert estimator.signal_updates.item() == 2 and estimator.signal_mean.item() != state["signal_mean"].item()


def test_nvil_baseline_parameters_get_gradient_only_from_the_baseline_loss():
    """Encoder and decoder gradients are bitwise the same without the baseline loss; the baseline's come from it."""
    torch.manual_seed(0)
    estimator = NVIL(baseline_lr=0.01)
    with torch.no_grad():
        for parameter in estimator.parameters():
            parameter.normal_()
    own = list(estimator.parameters())
    assert {id(p) for p in own} == {id(p) for p in [*estimator.baseline_net.parameters(), estimator.baseline_constant]}
    assert estimator.optimizer_options() == {"lr": 0.01}
    prior = make_prior("poisson")
    scale = torch.tensor(1.3, requires_grad=True)  # a "decoder" parameter

    def objective(z):
        return scale * quadratic_objective(z)

    def gradients(model):
        params = random_params(model, prior, BATCH, DIM)
        scale.grad = None
        torch.manual_seed(5)
        out = model(params, objective, prior)
        out.surrogate.backward()
        return out, params.grad, scale.grad.clone(), [p.grad for p in model.parameters()]

    without = copy.deepcopy(estimator)
    without._baseline_loss = lambda value, centre, learned: torch.zeros_like(value[0])
    out, encoder, decoder, baseline = gradients(estimator)
    _, encoder_without, decoder_without, baseline_without = gradients(without)
    assert torch.equal(encoder, encoder_without) and torch.equal(decoder, decoder_without)
    assert all(g is None or not g.any() for g in baseline_without)

    # The baseline's gradient is that of mean_B mean_S (f - c - b(x))^2 with the updated centre.
    reference = copy.deepcopy(estimator)
    reference.zero_grad()
    learned = reference.baseline(out.posterior)
    loss = (out.objective.detach() - reference.signal_mean - learned).square().mean()
    expected = torch.autograd.grad(loss, list(reference.parameters()))
    for got, want in zip(baseline, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert any(g.abs().sum() > 0 for g in baseline)


@pytest.mark.parametrize("name", NAMES)
def test_checkpoint_round_trip(name):
    """State after training steps survives save/load, and the loaded estimator computes the same gradients."""
    source = build(name, ESTIMATORS[name][2][-1])
    prior = make_prior("poisson")
    params = random_params(source, prior, BATCH, DIM)
    optimizer = torch.optim.SGD(source.parameters(), lr=1e-3) if list(source.parameters()) else None
    for _ in range(3):
        source(params, quadratic_objective, prior).surrogate.backward()
        if optimizer:
            optimizer.step()
            optimizer.zero_grad()
    expected_keys = {
        "reinforce": {"tau", "baseline_mean", "baseline_updates"},
        "nvil": {"tau", "signal_mean", "signal_var", "signal_updates", "baseline_constant"}
        | {f"baseline_net.{k}" for k in ("0.weight", "0.bias", "2.weight")},
    }.get(name, {"tau"})
    assert set(source.state_dict()) == expected_keys
    buffer = io.BytesIO()
    torch.save(source.state_dict(), buffer)
    buffer.seek(0)
    target = build(name, ESTIMATORS[name][2][-1])
    result = target.load_state_dict(torch.load(buffer, weights_only=True))
    assert not result.missing_keys and not result.unexpected_keys
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key

    def gradient(estimator):
        leaf = params.detach().clone().requires_grad_()
        torch.manual_seed(3)
        estimator(leaf, quadratic_objective, prior).surrogate.backward()
        return leaf.grad

    assert torch.equal(gradient(source), gradient(target))


# --------------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------------


class SpyObjective:
    """Records calls; returns ``(S, B)`` sums, or a fixed wrong shape."""

    def __init__(self, shape=None):
        self.calls = 0
        self.shape = shape

    def __call__(self, z):
        self.calls += 1
        value = z.flatten(2).sum(-1)
        return value if self.shape is None else value.sum() * torch.ones(self.shape)


def pattern(value) -> str:
    return re.escape(repr(value))


@pytest.mark.parametrize("num_samples", [0, -2, 1.5, True, "3"], ids=repr)
@pytest.mark.parametrize("cls", CLASSES, ids=CLASS_IDS)
def test_bad_num_samples(cls, num_samples):
    with pytest.raises(ValueError, match=rf"num_samples.*>= [12].*got {pattern(num_samples)}"):
        cls(num_samples=num_samples)


@pytest.mark.parametrize("cls", [ReinforceLOO, VIMCO], ids=["ReinforceLOO", "VIMCO"])
def test_leave_one_out_estimators_need_two_samples(cls):
    with pytest.raises(ValueError, match=rf"{cls.__name__} needs num_samples >= 2.*got 1"):
        cls(num_samples=1)
    assert cls(num_samples=2).num_samples == 2


@pytest.mark.parametrize("cls", CLASSES, ids=CLASS_IDS)
def test_truncation_selects_the_sampled_family(cls):
    assert not cls().truncated and cls().window is None
    assert cls(truncation="auto").truncated and cls(truncation="auto").window is None
    assert cls(truncation=8).truncated and cls(truncation=8).window == Window(0, 7)
    assert cls(truncation=(2, 9)).window == Window(2, 9)
    assert "truncation=[0, 7]" in repr(cls(truncation=8)) and "truncation=None" in repr(cls())


@pytest.mark.parametrize(
    ("truncation", "message"),
    [
        (0, r"truncation must hold at least 2 outcomes: a truncation level n >= 2 .*got 0"),
        ((5, 3), r"truncation must hold at least 2 outcomes.*got \(5, 3\)"),
        ((-1, 3), r"window low .*must be an integer >= 0, got -1"),
        (True, r"truncation level n >= 1 or a pair \[low, high\].*got True"),
        ("8", r'truncation must be None, a level n >= 2, a pair \[a, b\] or "auto", got \'8\''),
        ("Auto", r'truncation must be None, a level n >= 2, a pair \[a, b\] or "auto", got \'Auto\''),
    ],
    ids=repr,
)
@pytest.mark.parametrize("cls", CLASSES, ids=CLASS_IDS)
def test_bad_truncation(cls, truncation, message):
    with pytest.raises(ValueError, match=message):
        cls(truncation=truncation)


def test_nvil_first_training_step_only_initialises_the_normalisation():
    """No statistics yet: zero score gradient on the first step, the normalised one from the second."""
    torch.manual_seed(0)
    estimator, prior = NVIL(), make_prior("poisson")
    params = random_params(estimator, prior, BATCH, DIM)
    grads = []
    for _ in range(2):
        out = estimator(params, quadratic_objective, prior, kl=False)
        (grad,) = torch.autograd.grad(out.surrogate, params)
        grads.append(grad)
    assert torch.equal(grads[0], torch.zeros_like(params)) and grads[1].abs().sum() > 0
    assert estimator.signal_updates.item() == 2 and estimator.signal_var.item() > 1


@pytest.mark.parametrize("baseline", ["ema", "", None, 1, "Moving_Average"], ids=repr)
def test_bad_reinforce_baseline(baseline):
    with pytest.raises(ValueError, match=rf"unknown baseline {pattern(baseline)}; accepted: none, moving_average"):
        Reinforce(baseline=baseline)


@pytest.mark.parametrize("decay", [-0.1, 1, 1.0, 1.5, math.nan, math.inf, True, "0.9", None], ids=repr)
@pytest.mark.parametrize("cls", [Reinforce, NVIL], ids=["Reinforce", "NVIL"])
def test_bad_decay(cls, decay):
    with pytest.raises(ValueError, match=rf"decay must be a number in \[0, 1\), got {pattern(decay)}"):
        cls(decay=decay)


@pytest.mark.parametrize("hidden", [0, -1, 2.5, True, "16"], ids=repr)
def test_bad_nvil_hidden(hidden):
    with pytest.raises(ValueError, match=rf"baseline_hidden must be an integer >= 1, got {pattern(hidden)}"):
        NVIL(baseline_hidden=hidden)


@pytest.mark.parametrize("lr", [0, 0.0, -1e-3, math.nan, math.inf, True, "1e-3", None], ids=repr)
def test_bad_nvil_learning_rate(lr):
    with pytest.raises(ValueError, match=rf"baseline_lr must be a finite number > 0, got {pattern(lr)}"):
        NVIL(baseline_lr=lr)


WRONG_SHAPES = [("poisson", (4, 2, 2)), ("poisson", (4, 2)), ("poisson", (4, 2, 1, 1)), ("categorical", (4, 2, 4))]


@pytest.mark.parametrize(("family", "shape"), WRONG_SHAPES, ids=[f"{f}-{s}" for f, s in WRONG_SHAPES])
@pytest.mark.parametrize("cls", CLASSES, ids=CLASS_IDS)
def test_wrong_encoder_shape_fails_before_the_objective(cls, family, shape):
    estimator = cls(num_samples=2)
    prior = make_prior(family)
    objective = SpyObjective()
    expected = re.escape(f"(batch, latent_dim, {prior.raw_size}); got {shape}")
    with pytest.raises(ValueError, match=expected):
        estimator(torch.zeros(shape), objective, prior)
    assert objective.calls == 0


@pytest.mark.parametrize("bad_shape", [(4,), (3, 4), (1, 4), (2, 4, 1)], ids=repr)
@pytest.mark.parametrize("cls", CLASSES, ids=CLASS_IDS)
def test_objective_of_wrong_shape(cls, bad_shape):
    estimator = cls(num_samples=2)
    prior = make_prior("poisson")
    with pytest.raises(ValueError, match=rf"\(2, 4\).*got {re.escape(str(bad_shape))}"):
        estimator(torch.zeros(4, 3, 1), SpyObjective(bad_shape), prior)


def test_muprop_objective_must_accept_one_sample_at_the_mean():
    estimator = MuProp(num_samples=2)
    with pytest.raises(ValueError, match=r"posterior mean.*\(1, 4\), got \(2, 4\)"):
        estimator(torch.zeros(4, 3, 1), SpyObjective((2, 4)), make_prior("poisson"))


@pytest.mark.parametrize("family", ["categorical", "multinomial"])
@pytest.mark.parametrize("cls", CLASSES, ids=CLASS_IDS)
def test_window_with_a_vector_family_fails_before_the_objective(cls, family):
    estimator = cls(num_samples=2, truncation=4)
    objective = SpyObjective()
    with pytest.raises(ValueError, match=rf"{family}.*takes no window, got"):
        estimator(torch.zeros(2, 1, 3), objective, make_prior(family))
    assert objective.calls == 0


@pytest.mark.parametrize("cls", CLASSES, ids=CLASS_IDS)
def test_window_beyond_the_binomial_support_fails_before_the_objective(cls):
    estimator = cls(num_samples=2, truncation=30)
    objective = SpyObjective()
    with pytest.raises(ValueError, match=r"window \[0, 29\] exceeds the binomial support \[0, 20\]"):
        estimator(torch.zeros(2, 1, 1), objective, make_prior("binomial"))
    assert objective.calls == 0


# --------------------------------------------------------------------------------------------------
# Training with Lightning
# --------------------------------------------------------------------------------------------------


def quiet_trainer(**kwargs) -> pl.Trainer:
    options = {"logger": False, "enable_checkpointing": False, "enable_progress_bar": False}
    return pl.Trainer(enable_model_summary=False, **{**options, **kwargs})


TRAINING = {
    "reinforce": lambda: Reinforce(),
    "loo": lambda: ReinforceLOO(num_samples=2),
    "nvil": lambda: NVIL(baseline_lr=1e-2),
    "muprop": lambda: MuProp(),
    "vimco": lambda: VIMCO(num_samples=2),
}


@pytest.mark.parametrize("name", TRAINING)
def test_toy_task_trains(name):
    """Ten steps on the Poisson toy task with gradient statistics (exact loss by widening) every 5."""
    torch.manual_seed(0)
    task = ToyTask(TRAINING[name](), Prior("poisson", {"rate": 20.0}), init={"rate": 10.0}, grad_every=5)
    trainer = quiet_trainer(max_steps=10, limit_val_batches=0)
    trainer.fit(task, ToyTargets(num_targets=20))
    assert trainer.global_step == 10
    assert math.isfinite(float(trainer.callback_metrics["train/loss"]))
    assert math.isfinite(float(trainer.callback_metrics["train/mean"]))


VAE_PRIORS = {
    "reinforce": ("poisson", {"rate": 2.0}),
    "loo": ("geometric", {"probs": 0.25}),
    "nvil": ("negative_binomial", {"total_count": 3.0, "probs": 0.5}),
    "muprop": ("categorical", {"probs": [0.5, 0.3, 0.2]}),
    "vimco": ("poisson", {"rate": 2.0}),
}


@pytest.mark.parametrize("name", TRAINING)
def test_vae_trains_and_tests(name):
    """Three VAE steps on the digits, then the test loop (exact samples, importance-weighted NLL)."""
    torch.manual_seed(0)
    estimator = TRAINING[name]() if name != "vimco" else VIMCO(num_samples=2, truncation=24)
    model = digits_vae(estimator, Prior(*VAE_PRIORS[name]), iw_samples=5)
    trainer = quiet_trainer(max_steps=3, limit_val_batches=1, limit_test_batches=1, num_sanity_val_steps=0)
    data = Digits(batch_size=32)
    trainer.fit(model, datamodule=data)
    assert trainer.global_step == 3
    (result,) = trainer.test(model, datamodule=data, verbose=False)
    assert set(result) == {"test/loss", "test/recon", "test/kl", "test/nll_iw"}
    assert all(math.isfinite(value) for value in result.values()) and result["test/kl"] >= 0
