"""REBAR and RELAX: unbiased against enumeration, the conditional Gumbel sampler, the variance step, the interface.

Monte Carlo checks replicate a small batch ``N`` times in one call (one independent estimate per replica)
and compare with exact values within 4 standard errors estimated from the same draws; each has a
companion showing it would detect a wrong estimator. Seeds are fixed.
"""

from __future__ import annotations

import copy
import io
import math
import re

import pytest
import pytorch_lightning as pl
import torch
from estimators.estimator_testing import COUNT_FAMILIES, FAMILIES, U32, digits_vae, make_prior
from torch import nn
from torch.distributions import kl_divergence

from gengs_lightning.callbacks import TemperatureSchedule
from gengs_lightning.data import Digits, ToyTargets
from gengs_lightning.distributions import Prior, conditional_gumbel
from gengs_lightning.estimators.control_variates import REBAR, RELAX, ControlVariateEstimator, relax_features
from gengs_lightning.models import ToyTask

CLASSES = {"REBAR": REBAR, "RELAX": RELAX}
BATCH, DIM = 4, 2


def default_window(family: str):
    return FAMILIES[family][1][0]


def build(name: str, family: str, **kwargs) -> ControlVariateEstimator:
    return CLASSES[name](window=default_window(family), **kwargs)


def make_objective(target: list[float]):
    """A nonlinear, non-separable ``(S, B)`` objective of the flattened ``(D, *event)`` latents.

    ``sum_j j (z_j - t_j)^2 + 0.3 z_first z_last``: quadratic, so the relaxed control variate is not exact.
    """
    target_tensor = torch.tensor(target)

    def objective(z: torch.Tensor) -> torch.Tensor:
        flat = z.flatten(2)
        weights = torch.arange(1, flat.shape[-1] + 1, dtype=z.dtype)
        return ((flat - target_tensor.to(z.dtype)).square() * weights).sum(-1) + 0.3 * flat[..., 0] * flat[..., -1]

    return objective


def exact_gradient(estimator, params: torch.Tensor, objective, prior: Prior, kl: bool) -> torch.Tensor:
    """Per-example gradient of ``E_table[f] (+ KL)`` by enumerating all ``n^D`` joint outcomes, ``(B, D, R)``."""
    params = params.detach().clone().requires_grad_()
    posterior = estimator.posterior(params, prior)
    n, dim = posterior.num_outcomes, params.shape[1]
    index = torch.cartesian_prod(*[torch.arange(n)] * dim).reshape(-1, dim)  # (n^D, D)
    grid = posterior.outcomes[index]  # (n^D, D, *event)
    values = objective(grid.unsqueeze(1).expand(grid.shape[0], params.shape[0], *grid.shape[1:]))  # (n^D, B)
    log_prob = sum(posterior.log_pmf[:, d, index[:, d]] for d in range(dim)).T  # (n^D, B)
    expected = (log_prob.exp() * values).sum(0)
    if kl:
        expected = expected + kl_divergence(posterior, estimator.prior_distribution(posterior, prior)).sum(-1)
    (grad,) = torch.autograd.grad(expected.sum(), params)
    return grad


def gradient_draws(estimator, params: torch.Tensor, objective, prior: Prior, kl: bool, num_draws: int) -> torch.Tensor:
    """``num_draws`` independent per-example estimates ``(N, B, D, R)`` from one call on a replicated batch.

    The surrogate is a mean over the ``N * B`` rows, so ``N * B`` times its gradient in a row is that row's
    estimate.
    """
    replicas = params.detach().repeat(num_draws, 1, 1).requires_grad_()
    out = estimator(replicas, objective, prior, kl=kl)
    (grad,) = torch.autograd.grad(out.surrogate, replicas)
    return grad.view(num_draws, *params.shape) * (num_draws * params.shape[0])


def z_scores(draws: torch.Tensor, exact: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean - exact) / SE`` per entry, and the SE."""
    se = draws.std(0) / math.sqrt(draws.shape[0])
    return (draws.mean(0) - exact) / se, se


# --------------------------------------------------------------------------------------------------
# Unbiasedness against the enumerated truncated table
# --------------------------------------------------------------------------------------------------

PROBLEMS = {
    "poisson-w10-kl": ("poisson", {"rate": 3.0}, 10, True, [3.0, 1.5]),
    "poisson-w10-nokl": ("poisson", {"rate": 3.0}, 10, False, [3.0, 1.5]),
    "negbin-w[1,9]-kl": ("negative_binomial", {"total_count": 3, "probs": 0.5}, (1, 9), True, [2.0, 4.0]),
    "categorical-kl": ("categorical", {"probs": [0.5, 0.3, 0.2]}, None, True, [0.2, 0.5, 1.0, 0.7, 0.1, 0.4]),
}


def relax_with_random_network(window, tau: float = 0.5, **kwargs) -> RELAX:
    """RELAX whose ``r_psi`` is far from zero (seeded), so unbiasedness is checked with a real residual."""
    estimator = RELAX(window=window, tau=tau, **kwargs)
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for parameter in estimator.network.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator))
    return estimator


CONTROLS = {
    "rebar-eta1-lambda1": lambda w: REBAR(window=w),
    "rebar-eta0.2-lambda0.3": lambda w: REBAR(window=w, eta=0.2, tau=0.3),
    "rebar-eta2.5-lambda3": lambda w: REBAR(window=w, eta=2.5, tau=3.0),
    "rebar-eta-1-lambda0.5-S3": lambda w: REBAR(window=w, eta=-1.0, tau=0.5, num_samples=3),
    "relax-random-psi-lambda0.5": relax_with_random_network,
}
UNBIASED_CASES = [(c, "poisson-w10-nokl") for c in CONTROLS] + [
    ("rebar-eta1-lambda1", "poisson-w10-kl"),
    ("relax-random-psi-lambda0.5", "negbin-w[1,9]-kl"),
    ("rebar-eta1-lambda1", "categorical-kl"),
    ("relax-random-psi-lambda0.5", "categorical-kl"),
]
NUM_DRAWS = 3000


def unbiasedness_setup(problem: str):
    family, prior_params, window, kl, target = PROBLEMS[problem]
    prior = Prior(family, prior_params)
    generator = torch.Generator().manual_seed(1)
    raw_size = prior.raw_size
    params = 0.7 * torch.randn(BATCH, DIM, raw_size, generator=generator, dtype=torch.float64)
    return prior, window, kl, make_objective(target), params


@pytest.mark.parametrize(("control", "problem"), UNBIASED_CASES, ids=[f"{c}-{p}" for c, p in UNBIASED_CASES])
def test_mean_estimate_is_the_exact_gradient_of_the_truncated_expectation(control: str, problem: str):
    """Mean of N estimates w.r.t. the encoder output == enumerated gradient of E_table[f] (+ KL), 4 SE per entry.

    Holds for every eta, lambda and psi: the control variate changes the variance, not the mean.
    """
    prior, window, kl, objective, params = unbiasedness_setup(problem)
    estimator = CONTROLS[control](window)
    exact = exact_gradient(estimator, params, objective, prior, kl)
    torch.manual_seed(2)
    draws = gradient_draws(estimator, params, objective, prior, kl, NUM_DRAWS)
    z, se = z_scores(draws, exact)
    assert torch.isfinite(draws).all()
    assert (z.abs() <= 4).all(), f"estimate off the exact gradient by {z.abs().max():.2f} SE\n{exact}\n{draws.mean(0)}"
    assert exact.norm() > 5 * se.norm(), "the check must resolve the gradient"


class DroppedConditionalTerm(REBAR):
    """REBAR without ``- eta grad f(sigma(z~))``: biased, since ``E[grad c(z~)] != 0``."""

    @staticmethod
    def terms(f_hard, control, control_conditional):
        return f_hard - control_conditional, control


@pytest.mark.parametrize("problem", ["poisson-w10-nokl", "categorical-kl"])
def test_the_unbiasedness_check_detects_a_missing_conditional_term(problem: str):
    prior, window, kl, objective, params = unbiasedness_setup(problem)
    estimator = DroppedConditionalTerm(window=window)
    exact = exact_gradient(estimator, params, objective, prior, kl)
    torch.manual_seed(2)
    z, _ = z_scores(gradient_draws(estimator, params, objective, prior, kl, NUM_DRAWS), exact)
    assert z.abs().max() > 12, f"a biased estimator passed: max |z| = {z.abs().max():.2f}"


def test_training_samples_are_exact_draws_of_the_truncated_table():
    """``b`` (the reported sample) is an outcome of the window with the table's frequencies (4 SE)."""
    prior = Prior("poisson", {"rate": 3.0})
    estimator = REBAR(window=(1, 7), num_samples=20_000)
    params = torch.full((1, 1, 1), 1.2)
    torch.manual_seed(3)
    out = estimator(params, lambda z: z.flatten(2).sum(-1), prior, kl=False)
    sample = out.sample.flatten()
    assert torch.equal(sample, sample.round()) and sample.min() >= 1 and sample.max() <= 7
    q = out.posterior.pmf.flatten().double()
    freq = (sample.unsqueeze(-1) == out.posterior.outcomes).double().mean(0)
    se = (q * (1 - q) / sample.numel()).sqrt()
    assert ((freq - q).abs() <= 4 * se).all(), f"{freq} vs {q}"


# --------------------------------------------------------------------------------------------------
# The conditional Gumbel sampler
# --------------------------------------------------------------------------------------------------


def ks_statistic(x: torch.Tensor, cdf) -> float:
    """One-sample Kolmogorov-Smirnov distance of the draws ``x`` to ``cdf``."""
    x, _ = x.sort()
    n = x.numel()
    values = cdf(x)
    ranks = torch.arange(1, n + 1, dtype=x.dtype)
    return max((ranks / n - values).max().item(), (values - (ranks - 1) / n).max().item())


def gumbel_cdf(location: float):
    return lambda x: torch.exp(-torch.exp(-(x - location)))


#: KS critical value at level 1e-3: P(sqrt(N) D > 1.95) ~ 1e-3.
KS_CRITICAL = 1.95
LOG_PI = torch.log_softmax(torch.tensor([1.0, 0.0, -0.5, -3.0, -14.0], dtype=torch.float64), -1)


def unconditional(num: int) -> torch.Tensor:
    uniform = torch.rand(num, LOG_PI.numel(), dtype=torch.float64)
    return LOG_PI - torch.log(-torch.log(uniform))


def test_conditional_scores_have_the_conditioning_argmax_and_the_unconditional_law():
    num = 100_000
    torch.manual_seed(4)
    index = unconditional(num).argmax(-1)  # b ~ pi
    conditional = conditional_gumbel(LOG_PI.expand(num, -1), index)
    assert torch.equal(conditional.argmax(-1), index), "z~ must have its argmax at b"
    # Marginally over b, each coordinate is Gumbel(log pi_i): KS at level 1e-3 per coordinate.
    for i, location in enumerate(LOG_PI.tolist()):
        distance = ks_statistic(conditional[:, i], gumbel_cdf(location))
        assert distance * math.sqrt(num) < KS_CRITICAL, f"coordinate {i}: KS {distance * math.sqrt(num):.2f}"
    # Joint statistics against independent unconditional draws: the relaxed value the control variate
    # sees, the gap between the two largest scores and an order event (two-sample, 4 SE).
    reference = unconditional(num)

    def statistics(z: torch.Tensor) -> torch.Tensor:
        relaxed = torch.softmax(z / 0.5, -1) @ torch.arange(5, dtype=z.dtype)
        top = z.topk(2, -1).values
        return torch.stack([relaxed, relaxed.square(), top[:, 0] - top[:, 1], (z[:, 1] > z[:, 2]).double()], -1)

    a, b = statistics(conditional), statistics(reference)
    se = (a.var(0) / num + b.var(0) / num).sqrt()
    assert ((a.mean(0) - b.mean(0)).abs() <= 4 * se).all(), f"{a.mean(0)} vs {b.mean(0)} (SE {se})"


def test_the_conditional_law_check_has_power():
    """Conditioning on a wrong argmax (uniform b) gives a z~ the KS check rejects by far."""
    num = 100_000
    torch.manual_seed(4)
    index = torch.randint(0, LOG_PI.numel(), (num,))
    conditional = conditional_gumbel(LOG_PI.expand(num, -1), index)
    worst = max(ks_statistic(conditional[:, i], gumbel_cdf(loc)) for i, loc in enumerate(LOG_PI.tolist()))
    assert worst * math.sqrt(num) > 5 * KS_CRITICAL


def test_conditional_scores_are_finite_with_zero_and_tiny_masses_and_reparameterised():
    """``log pi`` with ``-inf`` and ``-80`` entries (float32): finite scores, argmax b, finite gradients."""
    logits = torch.tensor([[0.0, -80.0, -math.inf, 1.0]], requires_grad=True)
    index = torch.tensor([0, 1, 3, 0, 3]).unsqueeze(-1).expand(5, 1)
    torch.manual_seed(5)
    conditional = conditional_gumbel(logits.expand(5, 1, 4), index)
    assert torch.isfinite(conditional).all()
    assert torch.equal(conditional.argmax(-1), index)
    (grad,) = torch.autograd.grad(torch.softmax(conditional, -1)[..., 0].sum(), logits)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    # normalisation is irrelevant: shifted logits give the same scores at the same noise
    uniform = torch.rand(5, 1, 4)
    shifted = conditional_gumbel(logits.detach() + 3.0, index, uniform)
    torch.testing.assert_close(shifted, conditional_gumbel(logits.detach(), index, uniform))


def test_relax_features_have_finite_gradients_where_softmax_weights_underflow():
    """A relaxed weight of exactly 0 (scores 200 apart at float32) must not turn the entropy's gradient into NaN."""
    scores = torch.tensor([[0.0, -200.0, -5.0]], requires_grad=True)
    weights = torch.softmax(scores, -1)
    assert weights[0, 1] == 0
    features = relax_features(weights)
    entropy = -(weights[0, [0, 2]] * weights[0, [0, 2]].log()).sum() / math.log(3)
    torch.testing.assert_close(features[0, 2], entropy)
    (grad,) = torch.autograd.grad(features.sum(), scores)
    assert torch.isfinite(grad).all() and grad[0, 0] != 0


# --------------------------------------------------------------------------------------------------
# The variance step
# --------------------------------------------------------------------------------------------------


def squared_deviations(draws: torch.Tensor) -> torch.Tensor:
    """``||g_i - mean g||^2`` per draw: their mean is the total variance (times ``(N - 1) / N``)."""
    return (draws - draws.mean(0)).flatten(1).square().sum(-1)


@pytest.mark.parametrize(
    "factory",
    [lambda: REBAR(window=10, eta=0.0), lambda: RELAX(window=10, tau=5.0)],
    ids=["REBAR-from-eta0", "RELAX-from-lambda5"],
)
def test_training_the_control_variate_reduces_the_gradient_variance(factory):
    """15 Adam steps (lr 0.1) on the injected variance gradient lower the total variance, beyond 4 paired SE.

    Variance is measured on 1500 draws with the same noise before and after (common random numbers),
    so the standard error of the paired difference of squared deviations is small.
    """
    prior, window, kl, objective, params = unbiasedness_setup("poisson-w10-nokl")
    params = params.float()
    estimator = factory()
    torch.manual_seed(6)
    before = squared_deviations(gradient_draws(estimator, params, objective, prior, kl, 1500))
    optimizer = torch.optim.Adam(estimator.parameters(), lr=0.1)
    torch.manual_seed(7)
    for _ in range(15):
        optimizer.zero_grad()
        replicas = params.repeat(64, 1, 1).requires_grad_()
        estimator(replicas, objective, prior, kl=kl).surrogate.backward()
        optimizer.step()
    torch.manual_seed(6)
    after = squared_deviations(gradient_draws(estimator, params, objective, prior, kl, 1500))
    difference = before - after
    se = difference.std().item() / math.sqrt(difference.numel())
    assert difference.mean().item() > 4 * se, f"variance {before.mean():.1f} -> {after.mean():.1f} (paired SE {se:.2f})"
    assert after.mean() < 0.8 * before.mean()


class TinyModel(nn.Module):
    """An encoder and a decoder: the model parameters whose gradients the variance step must not touch."""

    def __init__(self, raw_size: int, event: int):
        super().__init__()
        self.encoder = nn.Linear(3, DIM * raw_size)
        self.decoder = nn.Linear(DIM * event, 1)
        self.raw_size = raw_size

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x).unflatten(-1, (DIM, self.raw_size))

    def objective(self, y: torch.Tensor):
        return lambda z: (self.decoder(z.flatten(2)).squeeze(-1) - y).square()


def capturing(cls):
    """A subclass that records ``d variance_objective / d (estimator parameters)`` when it is computed."""

    class Capturing(cls):
        def variance_objective(self, grad):
            value = super().variance_objective(grad)
            self.reference = torch.autograd.grad(value, list(self.parameters()), retain_graph=True, allow_unused=True)
            return value

    return Capturing


@pytest.mark.parametrize("family", ["poisson", "multinomial"])
@pytest.mark.parametrize("name", CLASSES)
def test_variance_step_touches_only_the_estimator_and_only_through_the_injected_gradient(name: str, family: str):
    prior = make_prior(family)
    estimator = capturing(CLASSES[name])(window=default_window(family), num_samples=2)
    model = TinyModel(prior.raw_size, prior.event_shape.numel())
    x, y = torch.randn(BATCH, 3), torch.randn(BATCH)
    frozen = copy.deepcopy(estimator).requires_grad_(False)  # no estimator parameters: no variance step

    def run(est):
        model.zero_grad()
        est.zero_grad()
        torch.manual_seed(8)
        out = est(model.encode(x), model.objective(y), prior)
        out.surrogate.backward()
        return out, [p.grad.clone() for p in model.parameters()]

    out, with_step = run(estimator)
    frozen_out, without_step = run(frozen)
    assert "cv_variance" in out.stats and "cv_variance" not in frozen_out.stats
    torch.testing.assert_close(out.surrogate, frozen_out.surrogate, rtol=0, atol=0)
    for a, b in zip(with_step, without_step, strict=True):
        torch.testing.assert_close(a, b, rtol=4 * U32, atol=0)  # the model's gradient is unchanged
    # The estimator's parameters get exactly the variance objective's gradient, nothing else.
    own = list(estimator.parameters())
    for parameter, reference in zip(own, estimator.reference, strict=True):
        expected = torch.zeros_like(parameter) if reference is None else reference
        torch.testing.assert_close(parameter.grad, expected, rtol=4 * U32, atol=1e-12)
    assert any(p.grad.abs().sum() > 0 for p in own)
    assert all(p.grad is None for p in frozen.parameters())


@pytest.mark.parametrize("name", CLASSES)
def test_no_variance_step_in_eval_mode_or_without_grad(name: str):
    prior = make_prior("poisson")
    estimator = build(name, "poisson").eval()
    params = torch.randn(BATCH, DIM, 1, requires_grad=True)
    out = estimator(params, make_objective([1.0, 2.0]), prior)
    out.surrogate.backward()
    assert all(p.grad is None for p in estimator.parameters()) and "cv_variance" not in out.stats
    estimator.train()
    with torch.no_grad():
        out = estimator(params, make_objective([1.0, 2.0]), prior)
    assert not out.surrogate.requires_grad and "cv_variance" not in out.stats


# --------------------------------------------------------------------------------------------------
# Interface contract on every family
# --------------------------------------------------------------------------------------------------

FAMILY_NAMES = list(FAMILIES)


def event_shape(family: str) -> tuple[int, ...]:
    return (3,) if family in ("categorical", "multinomial") else ()


def assert_exact_outcomes(family: str, sample: torch.Tensor, window) -> None:
    assert torch.equal(sample, sample.round()), f"non-integer sample values {sample.unique()}"
    if family in COUNT_FAMILIES:
        assert sample.min() >= window.low and sample.max() <= window.high
    elif family == "categorical":
        assert ((sample == 0) | (sample == 1)).all() and torch.equal(sample.sum(-1), torch.ones(sample.shape[:-1]))
    else:
        assert (sample >= 0).all() and torch.equal(sample.sum(-1), torch.full(sample.shape[:-1], 3.0))


@pytest.mark.parametrize("num_samples", [1, 3])
@pytest.mark.parametrize("family", FAMILY_NAMES)
@pytest.mark.parametrize("name", CLASSES)
def test_output_contract(name: str, family: str, num_samples: int):
    prior = make_prior(family)
    estimator = build(name, family, num_samples=num_samples)
    params = torch.randn(BATCH, DIM, estimator.raw_size(prior), generator=torch.Generator().manual_seed(0))
    params.requires_grad_()
    objective = make_objective([1.0] * DIM * max(1, math.prod(event_shape(family))))
    torch.manual_seed(1)
    out = estimator(params, objective, prior)

    assert out.sample.shape == (num_samples, BATCH, DIM, *event_shape(family))
    assert out.objective.shape == (num_samples, BATCH) and out.kl.shape == (BATCH,) and out.loss.shape == (BATCH,)
    assert_exact_outcomes(family, out.sample, out.posterior.window)
    torch.testing.assert_close(out.objective, objective(out.sample), rtol=0, atol=0)
    scale = (out.objective.abs().mean(0) + out.kl.abs()).max().item()
    torch.testing.assert_close(out.loss, out.objective.mean(0) + out.kl, rtol=0, atol=(num_samples + 1) * U32 * scale)
    assert out.surrogate.dim() == 0 and torch.isfinite(out.surrogate)
    torch.testing.assert_close(out.surrogate, out.loss.mean(), rtol=(BATCH + 2) * U32, atol=0)
    assert (out.kl >= -(num_samples + 1) * U32 * scale).all()
    assert {"trunc_n", "trunc_tail_mass", "cv_temperature", "cv_variance"} <= set(out.stats)
    assert all(torch.isfinite(v) and not v.requires_grad for v in out.stats.values())

    out.surrogate.backward()
    assert params.grad.shape == params.shape and torch.isfinite(params.grad).all() and params.grad.abs().sum() > 0
    own = list(estimator.parameters())
    assert own and all(p.grad is not None and torch.isfinite(p.grad).all() for p in own)
    assert estimator.log_temperature.grad.abs() > 0

    estimator.eval()
    out = estimator(params, objective, prior)
    assert_exact_outcomes(family, out.sample, out.posterior.window)
    assert out.sample.shape == (num_samples, BATCH, DIM, *event_shape(family))


def test_kl_false_gives_zero_kl_and_kl_true_the_truncated_kl():
    prior = make_prior("geometric")
    estimator = build("REBAR", "geometric")
    params = torch.randn(BATCH, DIM, 1)
    out = estimator(params, make_objective([1.0, 1.0]), prior, kl=False)
    assert torch.equal(out.kl, torch.zeros(BATCH))
    out = estimator(params, make_objective([1.0, 1.0]), prior, kl=True)
    posterior = estimator.posterior(params, prior)
    assert posterior.window == estimator.window
    torch.testing.assert_close(out.kl, kl_divergence(posterior, prior.truncated(posterior.window)).sum(-1))


EXPECTED_PARAMETERS = {
    "REBAR": {"eta", "log_temperature"},
    "RELAX": {"log_temperature", "network.0.weight", "network.0.bias", "network.2.weight", "network.2.bias"},
}


@pytest.mark.parametrize("name", CLASSES)
def test_parameters_state_dict_optimizer_options_and_checkpoint_round_trip(name: str):
    estimator = build(name, "poisson", tau=0.7, lr=0.01)
    assert {n for n, _ in estimator.named_parameters()} == EXPECTED_PARAMETERS[name]
    assert set(estimator.state_dict()) == EXPECTED_PARAMETERS[name] | {"tau"}
    assert estimator.optimizer_options() == {"lr": 0.01}
    assert estimator.temperature.item() == pytest.approx(0.7, rel=1e-6)
    prior = make_prior("poisson")
    params = torch.randn(BATCH, DIM, 1)
    optimizer = torch.optim.Adam(estimator.parameters(), lr=0.1)
    for _ in range(3):  # move every parameter away from its initial value
        optimizer.zero_grad()
        estimator(params.clone().requires_grad_(), make_objective([2.0, 0.0]), prior).surrogate.backward()
        optimizer.step()
    buffer = io.BytesIO()
    torch.save(estimator.state_dict(), buffer)
    buffer.seek(0)
    loaded = CLASSES[name](window=default_window("poisson"))
    result = loaded.load_state_dict(torch.load(buffer, weights_only=True))
    assert not result.missing_keys and not result.unexpected_keys
    for (key, a), b in zip(estimator.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), key
    outputs = []
    for est in (estimator, loaded):
        leaf = params.clone().requires_grad_()
        torch.manual_seed(9)
        out = est(leaf, make_objective([2.0, 0.0]), prior)
        out.surrogate.backward()
        outputs.append((out.sample, out.loss, leaf.grad, [p.grad for p in est.parameters()]))
    assert torch.equal(outputs[0][0], outputs[1][0]) and torch.equal(outputs[0][1], outputs[1][1])
    assert torch.equal(outputs[0][2], outputs[1][2])


@pytest.mark.parametrize("name", CLASSES)
def test_tau_reports_the_learned_temperature_and_a_schedule_has_no_effect(name: str):
    estimator = build(name, "poisson", tau=0.8)
    with torch.no_grad():
        estimator.log_temperature.fill_(math.log(1.7))
    prior, params = make_prior("poisson"), torch.randn(BATCH, DIM, 1)
    torch.manual_seed(10)
    reference = estimator(params, make_objective([1.0, 1.0]), prior)
    assert estimator.tau.item() == pytest.approx(1.7, rel=1e-6)
    assert reference.stats["cv_temperature"].item() == pytest.approx(1.7, rel=1e-6)
    estimator.set_temperature(0.05)  # what a TemperatureSchedule does before a batch
    torch.manual_seed(10)
    scheduled = estimator(params, make_objective([1.0, 1.0]), prior)
    assert estimator.tau.item() == pytest.approx(1.7, rel=1e-6)
    assert torch.equal(scheduled.surrogate, reference.surrogate)


# --------------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------------


class SpyObjective:
    """Counts its calls; returns ``(S, B)`` sums, or a fixed wrong shape, or the wrong shape only for ``2 S``."""

    def __init__(self, shape=None, relaxed_shape=None):
        self.calls, self.shape, self.relaxed_shape = 0, shape, relaxed_shape

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        value = z.flatten(2).sum(-1)
        if self.shape is not None:
            return torch.zeros(self.shape)
        if self.relaxed_shape is not None and self.calls == 2:
            return torch.zeros(self.relaxed_shape)
        return value


BAD_COMMON = [
    ("tau", 0.0, r"tau.*> 0.*got 0\.0"),
    ("tau", -1.0, r"tau.*> 0.*got -1\.0"),
    ("tau", math.nan, r"tau.*> 0.*got nan"),
    ("tau", math.inf, r"tau.*> 0.*got inf"),
    ("num_samples", 0, r"num_samples.*integer >= 1.*got 0"),
    ("num_samples", 1.5, r"num_samples.*integer >= 1.*got 1\.5"),
    ("num_samples", True, r"num_samples.*integer >= 1.*got True"),
    ("lr", 0.0, r"lr.*finite number > 0.*got 0\.0"),
    ("lr", -1e-3, r"lr.*finite number > 0.*got -0\.001"),
    ("lr", math.inf, r"lr.*finite number > 0.*got inf"),
    ("lr", math.nan, r"lr.*finite number > 0.*got nan"),
    ("lr", True, r"lr.*finite number > 0.*got True"),
    ("lr", "0.1", r"lr.*finite number > 0.*got '0\.1'"),
    ("window", 0, r"window must hold at least 2 outcomes: a truncation level n >= 2 .*got 0"),
    ("window", (5, 3), r"window must hold at least 2 outcomes.*got \(5, 3\)"),
    ("window", (-1, 3), r"window low .*must be an integer >= 0, got -1"),
    ("window", (1.0, 3), r"window low .*must be an integer >= 0, got 1\.0"),
    ("window", "8", r"truncation level n >= 1 or a pair \[low, high\].*got '8'"),
]
BAD_SPECIFIC = [
    ("REBAR", "eta", math.nan, r"eta.*finite number, got nan"),
    ("REBAR", "eta", math.inf, r"eta.*finite number, got inf"),
    ("REBAR", "eta", True, r"eta.*finite number, got True"),
    ("REBAR", "eta", "1", r"eta.*finite number, got '1'"),
    ("RELAX", "hidden", (), r"hidden.*non-empty sequence.*got \(\)"),
    ("RELAX", "hidden", 16, r"hidden.*non-empty sequence.*got 16"),
    ("RELAX", "hidden", "16", r"hidden.*non-empty sequence.*got '16'"),
    ("RELAX", "hidden", (8, 0), r"hidden layer width in \(8, 0\) must be an integer >= 1, got 0"),
    ("RELAX", "hidden", (2.5,), r"hidden layer width in \(2\.5,\) must be an integer >= 1, got 2\.5"),
    ("RELAX", "hidden", (True,), r"hidden layer width in \(True,\) must be an integer >= 1, got True"),
]
BAD_CASES = [(name, *case) for name in CLASSES for case in BAD_COMMON] + BAD_SPECIFIC


@pytest.mark.parametrize(
    ("name", "argument", "value", "pattern"), BAD_CASES, ids=[f"{c[0]}-{c[1]}={c[2]!r}" for c in BAD_CASES]
)
def test_bad_argument(name, argument, value, pattern):
    with pytest.raises(ValueError, match=pattern):
        CLASSES[name](**{argument: value})


WRONG_SHAPES = [("poisson", (4, 2, 2)), ("poisson", (4, 2)), ("poisson", (4, 2, 1, 1)), ("multinomial", (4, 2, 2))]


@pytest.mark.parametrize(("family", "shape"), WRONG_SHAPES, ids=[f"{f}-{s}" for f, s in WRONG_SHAPES])
@pytest.mark.parametrize("name", CLASSES)
def test_wrong_encoder_shape_fails_before_any_work(name, family, shape):
    estimator, prior, objective = build(name, family), make_prior(family), SpyObjective()
    before = copy.deepcopy(estimator.state_dict())
    pattern = rf"{name} with a {family} prior.*\(batch, latent_dim, {prior.raw_size}\).*got {re.escape(str(shape))}"
    with pytest.raises(ValueError, match=pattern):
        estimator(torch.zeros(shape), objective, prior)
    assert objective.calls == 0
    assert all(torch.equal(a, b) for a, b in zip(before.values(), estimator.state_dict().values(), strict=True))


@pytest.mark.parametrize("name", CLASSES)
def test_window_with_a_vector_family_fails_before_the_objective(name):
    estimator, prior, objective = CLASSES[name](window=4), make_prior("categorical"), SpyObjective()
    with pytest.raises(ValueError, match=r"categorical family.*takes no window, got"):
        estimator(torch.zeros(2, 1, 3), objective, prior)
    assert objective.calls == 0


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", CLASSES)
def test_objective_of_wrong_shape_at_the_exact_samples(name, training):
    estimator = build(name, "poisson", num_samples=2).train(training)
    with pytest.raises(ValueError, match=r"\(2, 4\).*got \(4,\)"):
        estimator(torch.zeros(4, 2, 1), SpyObjective(shape=(4,)), make_prior("poisson"))


@pytest.mark.parametrize("name", CLASSES)
def test_objective_of_wrong_shape_at_the_relaxed_samples(name):
    """The relaxed values come as ``2 S`` samples; an objective that breaks there is named."""
    estimator = build(name, "poisson", num_samples=2)
    with pytest.raises(ValueError, match=r"4 relaxed samples of 4 examples it must return \(4, 4\), got \(2, 4\)"):
        estimator(torch.zeros(4, 2, 1), SpyObjective(relaxed_shape=(2, 4)), make_prior("poisson"))


# --------------------------------------------------------------------------------------------------
# Integration with the models
# --------------------------------------------------------------------------------------------------


def quiet_trainer(**kwargs) -> pl.Trainer:
    options = {"logger": False, "enable_checkpointing": False, "enable_progress_bar": False}
    return pl.Trainer(enable_model_summary=False, **{**options, **kwargs})


@pytest.mark.parametrize("name", CLASSES)
def test_toy_task_fit(name):
    """10 steps with gradient statistics every 5; a temperature schedule runs but ``train/tau`` is learned."""
    torch.manual_seed(0)
    estimator = CLASSES[name](window=60)
    task = ToyTask(estimator, Prior("poisson", {"rate": 20.0}), init={"rate": 10.0}, grad_every=5, grad_draws=20)
    start = copy.deepcopy(estimator.state_dict())
    schedule = TemperatureSchedule(kind="exponential", tau0=5.0, rate=0.1)
    trainer = quiet_trainer(max_steps=10, callbacks=[schedule])
    trainer.fit(task, ToyTargets(num_targets=20))
    metrics = trainer.callback_metrics
    assert math.isfinite(metrics["train/loss"]) and math.isfinite(metrics["train/cv_variance"])
    assert all(torch.isfinite(p).all() for p in task.parameters())
    changed = [key for key, value in estimator.state_dict().items() if not torch.equal(value, start[key])]
    assert set(changed) >= {"log_temperature"} and len(changed) == len(start), f"unchanged: {set(start) - set(changed)}"
    # train/tau is the learned lambda at the last step (one Adam step of lr 1e-3 away), not the schedule's 2.03
    assert metrics["train/tau"].item() == pytest.approx(estimator.temperature.item(), abs=5e-3)
    assert abs(metrics["train/tau"].item() - schedule.temperature(9)) > 0.5


@pytest.mark.parametrize("name", CLASSES)
def test_vae_fit_on_digits(name):
    torch.manual_seed(0)
    estimator = CLASSES[name](window=16)
    model = digits_vae(estimator)
    start = copy.deepcopy(estimator.state_dict())
    trainer = quiet_trainer(max_steps=3, limit_val_batches=0, num_sanity_val_steps=0)
    trainer.fit(model, datamodule=Digits(batch_size=32))
    assert math.isfinite(trainer.callback_metrics["train/loss"])
    assert all(not torch.equal(value, start[key]) for key, value in estimator.state_dict().items())
