"""IndeCateR: unbiased against enumeration on a coupled two-dimensional toy problem, exact for one dimension.

Each row of one batch is an independent estimate (the same encoder output in every row; the surrogate is
a batch mean, so ``B * grad`` of a row is that row's estimate). The model parameter ``v`` of the objective
is one entry per row for the same reason. Tolerances are a multiple of the standard error of the same
draws, plus a float32 rounding term; fixed seeds.
"""

from __future__ import annotations

import pytest
import torch
from estimators.estimator_testing import (
    COUPLED_DIM,
    assert_mean_within,
    coupled_estimates,
    coupled_objective,
    make_prior,
    random_params,
)

from gengs_lightning.estimators import IndeCateR

#: Families and windows of the toy problem (the categorical one is its whole table).
TOY = [("poisson", 8), ("binomial", 12), ("negative_binomial", 10), ("geometric", (2, 9)), ("categorical", None)]


@pytest.mark.parametrize(("family", "window"), TOY, ids=[f for f, _ in TOY])
def test_indecater_is_unbiased_against_enumeration(family, window):
    prior = make_prior(family)
    estimator = IndeCateR(window=window, num_samples=1).train()
    estimates, exact, out = coupled_estimates(estimator, prior)
    assert out.stats["objective_evals"] == out.posterior.num_outcomes * COUPLED_DIM
    se = assert_mean_within(estimates, exact)
    assert se.max() > 0  # two coupled dimensions: a random estimate


def test_indecater_is_exact_for_one_latent_dimension():
    """With ``D = 1`` the sum over the window is the whole expectation: every draw gives the exact gradient."""
    prior = make_prior("poisson")
    estimator = IndeCateR(window=8, num_samples=2).train()
    raw = random_params(estimator, prior, 1, 1, seed=3).detach()
    params = raw.expand(50, 1, -1).clone().requires_grad_()
    out = estimator(params, lambda z: (z[..., 0] - 2.0).square(), prior)
    out.surrogate.backward()
    assert out.stats["objective_evals"] == 2 * 8
    exact_raw = raw.clone().requires_grad_()
    posterior = estimator.posterior(exact_raw, prior)
    expected = (posterior.pmf[0, 0] * (posterior.outcomes.to(raw) - 2.0).square()).sum()
    kl = torch.distributions.kl_divergence(posterior, estimator.prior_distribution(posterior, prior)).sum()
    (exact,) = torch.autograd.grad(expected + kl, exact_raw)
    estimates = params.grad[:, 0] * 50
    assert torch.allclose(estimates, exact[0].expand_as(estimates), rtol=1e-5, atol=1e-6)


def test_indecater_reports_its_draws_and_the_objective_there():
    prior = make_prior("poisson")
    estimator = IndeCateR(window=6, num_samples=3).train()
    params = random_params(estimator, prior, 4, COUPLED_DIM, seed=0)
    objective = coupled_objective(torch.tensor(0.3))
    out = estimator(params, objective, prior)
    assert out.sample.shape == (3, 4, COUPLED_DIM)
    assert torch.equal(out.objective, objective(out.sample))
    assert out.stats["objective_evals"] == 3 * 6 * COUPLED_DIM
