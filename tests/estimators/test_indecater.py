"""IndeCateR: unbiased against enumeration on a coupled two-dimensional toy problem, exact for one dimension.

Each row of one batch is an independent estimate (the same encoder output in every row; the surrogate is
a batch mean, so ``B * grad`` of a row is that row's estimate). The model parameter ``v`` of the objective
is one entry per row for the same reason. Tolerances are a multiple of the standard error of the same
draws, plus a float32 rounding term; fixed seeds.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from estimators.estimator_testing import make_prior, random_params

from gengs_lightning.estimators import IndeCateR

DRAWS = 4000
DIM = 2
#: Families and windows of the toy problem (the categorical one is its whole table).
TOY = [("poisson", 8), ("binomial", 12), ("negative_binomial", 10), ("geometric", (2, 9)), ("categorical", None)]


def coupled_objective(v: torch.Tensor):
    """``f(z) = sum_j w_j (z_j - 1)^2 + v_b z_first z_last`` over the flattened ``(D, *event)``: couples dimensions."""

    def objective(z: torch.Tensor) -> torch.Tensor:
        flat = z.flatten(2)
        weights = torch.arange(1, flat.shape[-1] + 1, dtype=z.dtype)
        return (flat - 1.0).square() @ weights + v * flat[..., 0] * flat[..., -1]

    return objective


def exact_gradient(estimator, prior, raw: torch.Tensor, v: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``grad (E_q f + KL)`` w.r.t. the encoder output ``(D, raw)`` and ``v``, by enumerating the ``n^D`` outcomes."""
    raw = raw.clone().requires_grad_()
    v_param = torch.tensor(v, dtype=raw.dtype, requires_grad=True)
    posterior = estimator.posterior(raw, prior)  # (1, D, n)
    n = posterior.num_outcomes
    combos = torch.tensor(list(itertools.product(range(n), repeat=DIM)))  # (n^D, D)
    z = posterior.outcomes.to(raw)[combos].unsqueeze(1)  # (n^D, 1, D, *event)
    log_p = posterior.log_pmf[0, torch.arange(DIM), combos].sum(-1)  # (n^D,)
    expected = (log_p.exp() * coupled_objective(v_param)(z)[:, 0]).sum()
    kl = torch.distributions.kl_divergence(posterior, estimator.prior_distribution(posterior, prior)).sum()
    return torch.autograd.grad(expected + kl, (raw, v_param))


@pytest.mark.parametrize(("family", "window"), TOY, ids=[f for f, _ in TOY])
def test_indecater_is_unbiased_against_enumeration(family, window):
    prior = make_prior(family)
    estimator = IndeCateR(window=window, num_samples=1).train()
    raw = random_params(estimator, prior, 1, DIM, seed=5).detach()
    params = raw.expand(DRAWS, DIM, -1).clone().requires_grad_()
    v = torch.full((DRAWS,), 0.5, requires_grad=True)
    torch.manual_seed(7)
    out = estimator(params, coupled_objective(v), prior)
    out.surrogate.backward()
    n = out.posterior.num_outcomes
    assert out.stats["objective_evals"] == n * DIM
    estimates = torch.cat([params.grad.flatten(1), v.grad[:, None]], 1).double() * DRAWS
    exact_raw, exact_v = exact_gradient(estimator, prior, raw.double(), 0.5)
    exact = torch.cat([exact_raw.flatten(), exact_v.reshape(1)])
    mean, se = estimates.mean(0), estimates.std(0) / DRAWS**0.5
    tolerance = 4 * se + 1e-4 * (exact.abs() + 1)
    assert ((mean - exact).abs() <= tolerance).all(), f"mean {mean} vs exact {exact} (4 SE {4 * se})"
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
    params = random_params(estimator, prior, 4, DIM, seed=0)
    objective = coupled_objective(torch.tensor(0.3))
    out = estimator(params, objective, prior)
    assert out.sample.shape == (3, 4, DIM)
    assert torch.equal(out.objective, objective(out.sample))
    assert out.stats["objective_evals"] == 3 * 6 * DIM
