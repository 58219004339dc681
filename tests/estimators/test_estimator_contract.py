"""The estimator interface: every registered estimator x example x family it supports, then the GenGS kinds in detail.

The first part runs over :func:`~gengs_lightning.estimators.registered` at collection time (each class's
:meth:`~gengs_lightning.estimators.Estimator.examples`, as torch.distributions' tests run over
``_get_examples()``); its checks are functions that a test of an estimator registered later can call.
The second part checks the GenGS kinds against independent reference tables on every window.
"""

from __future__ import annotations

import pytest
import torch
from estimators.estimator_testing import (
    CASE_IDS,
    CASES,
    COUNT_FAMILIES,
    U32,
    U64,
    Case,
    Example,
    count_params,
    linear_objective,
    make_prior,
    num_terms,
    quadratic_objective,
    random_params,
    reference_count_log_table,
    reference_outside_mass,
    reference_vector_log_table,
    registry_examples,
)

from gengs_lightning.distributions import FAMILIES, Prior, UntruncatedPosterior, Window, compositions
from gengs_lightning.estimators import EstimatorOutput, GenGSExplicit, registered

BATCH, DIM = 4, 2

# ==================================================================================================
# Every registered estimator
# ==================================================================================================

EXAMPLES = registry_examples()


class RecordingObjective:
    """:func:`linear_objective` that records how many samples each call evaluates (``S'`` of ``(S', B, ...)``)."""

    def __init__(self):
        self.calls: list[int] = []

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        self.calls.append(z.shape[0])
        return linear_objective(z)


def run_example(example: Example, num_samples: int = 1, training: bool = True, kl: bool = True, objective=None):
    """Build the example on its family's prior and run it on seeded random params: (estimator, params, output)."""
    estimator = example.build(num_samples).train(training)
    prior = make_prior(example.family)
    params = random_params(estimator, prior, BATCH, DIM, seed=0)
    torch.manual_seed(1)
    return estimator, params, estimator(params, objective or linear_objective, prior, kl=kl)


def assert_outcomes_of(family: str, sample: torch.Tensor, posterior) -> None:
    """Each sample is an outcome of the family: a count (of the posterior's window, if any) or a valid vector."""
    assert torch.equal(sample, sample.round()), f"non-integer sample values {sample.unique()}"
    if family in COUNT_FAMILIES:
        window = getattr(posterior, "window", None)
        low, high = (window.low, window.high) if window is not None else (0, float("inf"))
        assert sample.min() >= low and sample.max() <= high, f"samples {sample.unique().tolist()} outside {window}"
    elif family == "categorical":
        assert ((sample == 0) | (sample == 1)).all() and torch.equal(sample.sum(-1), torch.ones(sample.shape[:-1]))
    else:
        total = make_prior("multinomial").structural["total_count"]
        assert (sample >= 0).all() and torch.equal(sample.sum(-1), torch.full(sample.shape[:-1], float(total)))


def check_output_contract(example: Example, num_samples: int) -> None:
    """Shapes, finite values, the objective at the reported samples, detached stats, the objective evaluations
    per example counted in ``stats``, a finite nonzero gradient."""
    objective = RecordingObjective()
    estimator, params, out = run_example(example, num_samples, objective=objective)
    samples = estimator.num_samples
    assert out.stats["objective_evals"].item() == sum(objective.calls) >= samples
    assert isinstance(out, EstimatorOutput)
    assert out.sample.shape == (samples, BATCH, DIM, *event_shape(example))
    assert out.objective.shape == (samples, BATCH)
    assert out.kl.shape == (BATCH,) and out.loss.shape == (BATCH,)
    assert torch.isfinite(out.kl).all() and torch.isfinite(out.loss).all()
    assert out.surrogate.dim() == 0 and torch.isfinite(out.surrogate)
    assert torch.equal(out.objective, linear_objective(out.sample))
    assert all(torch.isfinite(value) and not value.requires_grad for value in out.stats.values())
    if estimator.relaxed:
        assert out.sample.requires_grad
        if not getattr(estimator, "hard", False):
            assert not torch.equal(out.sample.detach(), out.sample.detach().round()), "relaxed samples are outcomes"
    else:
        assert_outcomes_of(example.family, out.sample, out.posterior)
    out.surrogate.backward()
    assert params.grad is not None and torch.isfinite(params.grad).all() and params.grad.abs().sum() > 0


def check_eval_contract(example: Example) -> None:
    """Eval mode: exact outcomes without gradient, ``num_samples`` evaluations; the KL still trains the encoder."""
    estimator, params, out = run_example(example, num_samples=3, training=False)
    assert out.stats["objective_evals"].item() == estimator.num_samples
    assert_outcomes_of(example.family, out.sample, out.posterior)
    assert not out.sample.requires_grad
    out.surrogate.backward()
    assert torch.isfinite(params.grad).all()


def check_without_kl(example: Example) -> None:
    """``kl=False``: a zero KL term and a finite gradient."""
    _, params, out = run_example(example, num_samples=3, kl=False)
    assert torch.equal(out.kl, torch.zeros(BATCH))
    out.surrogate.backward()
    assert torch.isfinite(params.grad).all()


def check_unbiased(example: Example, draws: int = 4000) -> None:
    """The mean of ``draws`` independent gradient estimates is the exact gradient of ``E_q f + KL``, within 5 SE.

    The draws are the rows of one batch (one latent dimension, the same encoder output in every row): the
    surrogate is a batch mean, so ``B * grad`` of a row is that row's estimate.
    """
    estimator = example.build(2).train()
    prior = make_prior(example.family)
    raw = random_params(estimator, prior, 1, 1, seed=2).detach()
    params = raw.expand(draws, 1, -1).clone().requires_grad_()
    torch.manual_seed(3)
    estimator(params, linear_objective, prior).surrogate.backward()
    estimates = params.grad[:, 0].double() * draws
    exact_raw = raw.clone().requires_grad_()
    posterior = estimator.posterior(exact_raw, prior)
    table = posterior.widen() if isinstance(posterior, UntruncatedPosterior) else posterior
    every_outcome = table.outcomes.reshape(table.num_outcomes, 1, 1, *event_shape(example))  # (n, B=1, D=1, ...)
    expected_f = (table.pmf.reshape(-1) * linear_objective(every_outcome)[:, 0]).sum()
    kl = torch.distributions.kl_divergence(posterior, estimator.prior_distribution(posterior, prior)).sum()
    (exact,) = torch.autograd.grad(expected_f + kl, exact_raw)
    exact = exact[0, 0].double()
    mean, se = estimates.mean(0), estimates.std(0) / draws**0.5
    tolerance = 5 * se + 1e-4 * (exact.abs() + 1)
    assert ((mean - exact).abs() <= tolerance).all(), f"mean {mean} vs exact {exact} (5 SE {5 * se})"


def event_shape(case) -> tuple[int, ...]:
    return (3,) if case.family in ("categorical", "multinomial") else ()


@pytest.mark.parametrize("num_samples", [1, 3])
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.id)
def test_registered_output_contract(example: Example, num_samples: int):
    check_output_contract(example, num_samples)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.id)
def test_registered_eval_contract(example: Example):
    check_eval_contract(example)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.id)
def test_registered_without_kl(example: Example):
    check_without_kl(example)


UNBIASED = [e for e in EXAMPLES if e.cls.unbiased and e.family in ("poisson", "categorical")]


@pytest.mark.parametrize("example", UNBIASED, ids=lambda e: e.id)
def test_registered_unbiased_estimators_are_unbiased(example: Example):
    check_unbiased(example)


#: Objective evaluations per example and training step as each class's docstring states them, for ``S``
#: samples, ``D`` latent dimensions and ``n`` outcomes in the table.
DOCUMENTED_COST = {
    "MuProp": lambda s, d, n: s + 1,  # the samples and the mean-field point
    "REBAR": lambda s, d, n: 3 * s,  # hard, relaxed and conditionally relaxed samples
    "RELAX": lambda s, d, n: 3 * s,
    "GenGSRB": lambda s, d, n: s * (1 + 2 * d),
    "StoRB": lambda s, d, n: s * (1 + d),  # m = 1 summed category
    "UnOrd": lambda s, d, n: s + d * (s - 1),  # the set of k = S draws
    "GOGradient": lambda s, d, n: s * (1 + d),
    "IndeCateR": lambda s, d, n: s * n * d,
}


@pytest.mark.parametrize("num_samples", [2, 3])
@pytest.mark.parametrize("example", [e for e in EXAMPLES if e.family == "poisson"], ids=lambda e: e.id)
def test_registered_objective_evaluations_are_the_documented_cost(example: Example, num_samples: int):
    """``stats["objective_evals"]`` is the cost in the class's docstring (``S`` for all not listed)."""
    _, _, out = run_example(example, num_samples)
    n = getattr(out.posterior, "num_outcomes", None)
    expected = DOCUMENTED_COST.get(example.cls.__name__, lambda s, d, n: s)(num_samples, DIM, n)
    assert out.stats["objective_evals"].item() == expected


@pytest.mark.parametrize("cls", registered(), ids=lambda c: c.__name__)
def test_registered_classes_describe_themselves(cls):
    """Families among the package's, at least one example, and fewer than ``min_samples`` samples refused."""
    assert cls.examples() and set(cls.families) <= set(FAMILIES)
    assert isinstance(cls.unbiased, bool) and isinstance(cls.relaxed, bool)
    if cls.min_samples > 1:
        with pytest.raises(ValueError, match=rf"num_samples.*{cls.min_samples}.*got {cls.min_samples - 1}"):
            cls(num_samples=cls.min_samples - 1, **cls.examples()[0])


# ==================================================================================================
# The GenGS kinds in detail
# ==================================================================================================


def run(case: Case, num_samples: int = 1, training: bool = True, kl: bool = True, seed: int = 0, **kwargs):
    """Build the case's estimator and prior, run it on seeded random params, return (estimator, params, output)."""
    estimator = case.estimator(num_samples=num_samples, **kwargs)
    estimator.train(training)
    prior = make_prior(case.family)
    params = random_params(estimator, prior, BATCH, DIM, seed=seed)
    torch.manual_seed(seed + 1)
    out = estimator(params, linear_objective, prior, kl=kl)
    return estimator, prior, params, out


def expected_window(case: Case, out: EstimatorOutput) -> Window:
    """The outcomes the sample must lie in: the case's window, the binomial support, or the chosen one."""
    if case.kind == "nonparametric" or case.window is None:
        return out.posterior.window
    return Window.of(case.window)


def loss_tolerance(out: EstimatorOutput) -> torch.Tensor:
    """Float32 error of ``mean_S objective + kl`` computed with another summation order: ``S + 1`` roundings."""
    num_samples = out.objective.shape[0]
    return (num_samples + 1) * U32 * (out.objective.abs().mean(0) + out.kl.abs())


def assert_exact_outcomes(case: Case, sample: torch.Tensor, out: EstimatorOutput) -> None:
    """Each sample is an outcome of the family: an integer of the window or a valid one-hot / count vector."""
    assert torch.equal(sample, sample.round()), f"non-integer sample values {sample.unique()}"
    if case.family in COUNT_FAMILIES:
        window = expected_window(case, out)
        assert sample.min() >= window.low and sample.max() <= window.high, (
            f"samples {sample.unique().tolist()} outside {window}"
        )
    elif case.family == "categorical":
        assert ((sample == 0) | (sample == 1)).all() and torch.equal(sample.sum(-1), torch.ones(sample.shape[:-1]))
    else:
        total = make_prior("multinomial").structural["total_count"]
        assert (sample >= 0).all() and torch.equal(sample.sum(-1), torch.full(sample.shape[:-1], float(total)))


@pytest.mark.parametrize("num_samples", [1, 3])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_output_contract(case: Case, num_samples: int):
    estimator, prior, params, out = run(case, num_samples)

    assert isinstance(out, EstimatorOutput)
    assert out.sample.shape == (num_samples, BATCH, DIM, *event_shape(case))
    assert out.objective.shape == (num_samples, BATCH)
    assert out.kl.shape == (BATCH,) and out.loss.shape == (BATCH,)
    assert out.surrogate.dim() == 0 and torch.isfinite(out.surrogate)
    assert torch.isfinite(out.kl).all() and (out.kl >= -loss_tolerance(out)).all()
    torch.testing.assert_close(out.loss, out.objective.mean(0) + out.kl, rtol=0, atol=loss_tolerance(out).max().item())
    torch.testing.assert_close(out.surrogate, out.loss.mean(), rtol=(BATCH + 1) * U32, atol=0)
    torch.testing.assert_close(out.objective, linear_objective(out.sample), rtol=0, atol=0)
    assert set(out.stats) >= {"trunc_n", "trunc_tail_mass"}
    assert all(torch.isfinite(value) and not value.requires_grad for value in out.stats.values())

    out.surrogate.backward()
    assert params.grad is not None and params.grad.shape == params.shape
    assert torch.isfinite(params.grad).all()
    assert params.grad.abs().sum() > 0


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_trunc_stats_match_window_and_reference_tail_mass(case: Case):
    """``trunc_n`` is the window size and ``trunc_tail_mass`` the mass outside it (batch mean).

    Explicit posteriors report their own outside mass; implicit ones the prior's; the vector families
    none. The reference is an independent float64 sum of the pmf. The package computes each mass in
    float64 (error at most ``num_terms(window) U64``), rounds it to float32 and averages ``B * D`` of them in
    float32 (at most ``B * D + 1`` roundings).
    """
    _, prior, _, out = run(case)
    window = out.posterior.window
    if case.family in COUNT_FAMILIES:
        assert out.stats["trunc_n"].item() == window.size
        if case.kind != "nonparametric":
            assert window == expected_window(case, out)
        source = prior.truncated(window) if case.kind == "implicit" else out.posterior
        expected = float(reference_outside_mass(case.family, count_params(source), window).mean())
        tol = (BATCH * DIM + 2) * U32 * expected + num_terms(window) * U64
        assert abs(out.stats["trunc_tail_mass"].item() - expected) <= tol
    else:
        num_outcomes = 3 if case.family == "categorical" else len(compositions(3, 3))
        assert out.stats["trunc_n"].item() == num_outcomes
        assert out.stats["trunc_tail_mass"].item() == 0.0


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_kl_false_gives_zero_kl(case: Case):
    _, _, params, out = run(case, num_samples=3, kl=False)
    assert torch.equal(out.kl, torch.zeros(BATCH))
    torch.testing.assert_close(out.loss, out.objective.mean(0), rtol=0, atol=loss_tolerance(out).max().item())
    out.surrogate.backward()
    assert torch.isfinite(params.grad).all()


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_eval_mode_draws_exact_outcomes(case: Case):
    estimator, _, params, out = run(case, num_samples=3, training=False)
    assert not estimator.training
    assert_exact_outcomes(case, out.sample, out)
    assert not out.sample.requires_grad
    out.surrogate.backward()  # the KL still trains the encoder in eval mode
    assert torch.isfinite(params.grad).all()


@pytest.mark.parametrize("case", [c for c in CASES if c.kind != "straight_through"], ids=lambda c: c.id)
def test_training_mode_samples_are_relaxed(case: Case):
    """Without ``hard`` training samples are convex combinations of outcomes, not outcomes (tau = 1)."""
    _, _, _, out = run(case, num_samples=3)
    assert out.sample.requires_grad
    sample = out.sample.detach()
    assert not torch.equal(sample, sample.round())
    if case.family in COUNT_FAMILIES:
        window = expected_window(case, out)
        assert sample.min() >= window.low and sample.max() <= window.high


# Every case with a discrete forward value: GenGSStraightThrough as is, the others with ``hard=True``.
HARD_CASES = CASES
HARD_IDS = [c.id if c.kind == "straight_through" else "hard-" + c.id for c in HARD_CASES]


def hard_run(case: Case, **kwargs):
    hard = {} if case.kind == "straight_through" else {"hard": True}
    return run(case, num_samples=3, kl=False, **hard, **kwargs)


@pytest.mark.parametrize("case", HARD_CASES, ids=HARD_IDS)
def test_hard_forward_is_exact_and_gradient_is_finite_and_nonzero(case: Case):
    estimator, _, params, out = hard_run(case)
    assert estimator.hard and estimator.training
    assert_exact_outcomes(case, out.sample.detach(), out)
    assert out.sample.requires_grad
    out.surrogate.backward()  # kl=False: the whole gradient flows through the straight-through sample
    assert torch.isfinite(params.grad).all()
    assert (params.grad != 0).any()


@pytest.mark.parametrize("case", HARD_CASES, ids=HARD_IDS)
def test_hard_gradient_is_the_relaxed_gradient_at_the_same_noise(case: Case):
    """Straight-through: the backward pass is that of the relaxed sample drawn with the same noise."""
    estimator, prior, params, hard_out = hard_run(case)
    (hard_grad,) = torch.autograd.grad(hard_out.surrogate, params)
    if case.kind == "straight_through":
        soft = GenGSExplicit(window=case.window, num_samples=3)
    else:
        soft = case.estimator(num_samples=3)
    soft_params = params.detach().clone().requires_grad_()
    torch.manual_seed(1)  # the seed ``run`` used before the hard forward pass
    soft_out = soft(soft_params, linear_objective, prior, kl=False)
    (soft_grad,) = torch.autograd.grad(soft_out.surrogate, soft_params)
    assert not torch.equal(hard_out.sample, soft_out.sample.detach())
    # The same operations on the same noise and parameters: bitwise equal.
    assert torch.equal(hard_grad, soft_grad)


@pytest.mark.parametrize("num_samples", [1, 4])
@pytest.mark.parametrize(
    "case",
    [Case("explicit", "poisson", 8), Case("implicit", "multinomial"), Case("nonparametric", "binomial")],
    ids=lambda c: c.id,
)
def test_multi_sample_loss_is_mean_objective_plus_kl(case: Case, num_samples: int):
    estimator = case.estimator(num_samples=num_samples)
    prior = make_prior(case.family)
    params = random_params(estimator, prior, BATCH, DIM, seed=3)
    torch.manual_seed(4)
    out = estimator(params, quadratic_objective, prior)
    values = quadratic_objective(out.sample)
    torch.testing.assert_close(out.objective, values, rtol=0, atol=0)
    by_hand = values.sum(0) / num_samples + out.kl
    torch.testing.assert_close(out.loss, by_hand, rtol=0, atol=loss_tolerance(out).max().item())
    if num_samples > 1:  # independent draws, not one draw repeated
        assert not torch.equal(out.sample[0], out.sample[1])
    # The gradient of the surrogate is the mean of the per-sample gradients plus the KL gradient.
    (grad,) = torch.autograd.grad(out.surrogate, params, retain_graph=True)
    per_sample = [
        torch.autograd.grad(out.objective[s].mean(), params, retain_graph=True)[0] for s in range(num_samples)
    ]
    (kl_grad,) = torch.autograd.grad(out.kl.mean(), params, retain_graph=True)
    expected = torch.stack(per_sample).mean(0) + kl_grad
    scale = (torch.stack(per_sample).abs().mean(0) + kl_grad.abs()).max().item()
    torch.testing.assert_close(grad, expected, rtol=0, atol=(num_samples + BATCH + 2) * U32 * scale)


@pytest.mark.parametrize(
    "case",
    [Case("explicit", "poisson", (1, 7)), Case("implicit", "geometric", 12), Case("explicit", "multinomial")],
    ids=lambda c: c.id,
)
def test_eval_samples_follow_the_posterior_table(case: Case):
    """Eval draws are exact: each outcome's frequency is within 4 standard errors of its reference mass."""
    num_draws = 20_000
    estimator = case.estimator(num_samples=num_draws).eval()
    prior = make_prior(case.family)
    generator = torch.Generator().manual_seed(5)
    raw = torch.randn(1, 1, estimator.raw_size(prior), generator=generator)
    torch.manual_seed(6)
    out = estimator(raw, lambda z: z.flatten(2).sum(-1), prior, kl=False)
    outcomes = out.posterior.outcomes
    if case.kind == "implicit":
        log_q = torch.log_softmax(raw.double(), -1).numpy()
    elif case.family in COUNT_FAMILIES:
        log_q = reference_count_log_table(case.family, count_params(out.posterior), out.posterior.window)
    else:
        log_q = reference_vector_log_table(case.family, out.posterior.logits, outcomes, prior.structural["total_count"])
    q = torch.as_tensor(log_q).exp().reshape(-1)
    sample = out.sample.reshape(num_draws, -1)
    rows = outcomes.reshape(len(outcomes), -1)
    hits = (sample.unsqueeze(1) == rows.unsqueeze(0)).all(-1)
    assert torch.equal(hits.sum(1), torch.ones(num_draws, dtype=torch.long)), "a draw matched no single outcome"
    # Outcomes expected fewer than 5 times are pooled (the usual condition for the normal approximation).
    rare = q * num_draws < 5
    counts = torch.cat([hits[:, ~rare].double().sum(0), hits[:, rare].double().sum().reshape(1)])
    masses = torch.cat([q[~rare], q[rare].sum().reshape(1)])
    se = (masses * (1 - masses) / num_draws).sqrt()
    freq = counts / num_draws
    assert ((freq - masses).abs() <= 4 * se).all(), f"frequencies {freq} vs masses {masses} (4 SE = {4 * se})"


@pytest.mark.parametrize("kind", ["explicit", "implicit", "straight_through"])
def test_categorical_with_index_outcomes(kind: str):
    """``one_hot=False``: outcomes are class indices 0 .. K - 1, relaxed in training, exact in eval."""
    prior = Prior("categorical", {"probs": [0.7, 0.2, 0.1], "one_hot": False})
    case = Case(kind, "categorical")
    estimator = case.estimator(num_samples=3)
    params = random_params(estimator, prior, BATCH, DIM, seed=7)
    out = estimator(params, linear_objective, prior)
    assert out.sample.shape == (3, BATCH, DIM)
    assert out.sample.min() >= 0 and out.sample.max() <= 2
    assert torch.equal(out.sample, out.sample.round()) == (kind == "straight_through")
    out.surrogate.backward()
    assert torch.isfinite(params.grad).all() and (params.grad != 0).any()
    z = estimator.eval()(params, linear_objective, prior).sample
    assert torch.equal(z, z.round()) and z.min() >= 0 and z.max() <= 2
