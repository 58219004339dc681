"""GO gradient: unbiased against enumeration on a coupled two-dimensional toy problem (four count families), and
against the closed-form Poisson toy gradient on a window wide enough for the tail to vanish.

Each row of one batch is an independent estimate (the same encoder output in every row; ``B * grad`` of a
row is its estimate); the objective's model parameter ``v`` has one entry per row. Tolerances: a multiple of
the standard error of the same draws plus a float32 rounding term; fixed seeds.
"""

from __future__ import annotations

import pytest
import torch
from estimators.estimator_testing import (
    COUPLED_DIM,
    assert_mean_within,
    coupled_estimates,
    make_prior,
    random_params,
)

from gengs_lightning.estimators import GOGradient
from gengs_lightning.estimators.go_gradient import cdf_gradient_carrier

#: Independent estimates of the closed-form test.
DRAWS = 4000
TOY = [("poisson", 8), ("binomial", 12), ("negative_binomial", 10), ("geometric", (2, 9))]


@pytest.mark.parametrize(("family", "window"), TOY, ids=[f for f, _ in TOY])
def test_go_is_unbiased_against_enumeration(family, window):
    prior = make_prior(family)
    estimator = GOGradient(window=window, num_samples=1).train()
    estimates, exact, out = coupled_estimates(estimator, prior)
    assert out.stats["objective_evals"] == 1 + COUPLED_DIM
    assert_mean_within(estimates, exact)


def test_go_matches_the_closed_form_poisson_gradient():
    """``E (z - t)^2 = rate + (rate - t)^2`` for ``z ~ Poisson(rate)``: the gradient ``(1 + 2 (rate - t)) d rate``."""
    prior = make_prior("poisson")
    estimator = GOGradient(window=40, num_samples=1).train()
    raw = random_params(estimator, prior, 1, 1, seed=1).detach()
    params = raw.expand(DRAWS, 1, -1).clone().requires_grad_()
    torch.manual_seed(2)
    out = estimator(params, lambda z: (z[..., 0] - 3.0).square(), prior, kl=False)
    out.surrogate.backward()
    assert out.stats["trunc_tail_mass"] < 1e-12
    estimates = params.grad[:, 0, 0].double() * DRAWS
    exact_raw = raw.double().clone().requires_grad_()
    rate = prior.family.params_from_raw(exact_raw, **prior.structural)["rate"]
    (exact,) = torch.autograd.grad((rate + (rate - 3.0).square()).sum(), exact_raw)
    mean, se = estimates.mean(), estimates.std() / DRAWS**0.5
    assert (mean - exact[0, 0, 0]).abs() <= 4 * se + 1e-4, f"mean {mean} vs exact {exact} (4 SE {4 * se})"


def test_cdf_gradient_carrier_has_the_cdf_gradient():
    logits = torch.randn(3, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(0), requires_grad=True)
    log_pmf = logits.log_softmax(-1)
    jac = torch.autograd.functional.jacobian(lambda x: cdf_gradient_carrier(x.log_softmax(-1)), logits)
    ref = torch.autograd.functional.jacobian(lambda x: x.softmax(-1).cumsum(-1), logits)
    assert torch.allclose(jac, ref, atol=1e-12)
    assert torch.isfinite(cdf_gradient_carrier(log_pmf)).all()
