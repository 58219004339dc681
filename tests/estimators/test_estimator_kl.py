"""The KL term: zero at ``raw_like(prior)``, otherwise the closed form on the shared outcome table."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from estimators.estimator_testing import (
    CASE_IDS,
    CASES,
    COUNT_FAMILIES,
    FAMILIES,
    Case,
    assert_table_close,
    count_params,
    kl_and_tolerance,
    linear_objective,
    make_prior,
    random_params,
    reference_log_tables,
    reference_upper_tail,
)

from gengs_lightning.distributions import Prior, Window
from gengs_lightning.estimators import GenGSExplicit, GenGSImplicit

BATCH, DIM = 5, 3


def kl_run(case: Case, prior: Prior, params: torch.Tensor):
    estimator = case.estimator()
    torch.manual_seed(0)
    return estimator(params, linear_objective, prior)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_kl_is_the_closed_form_on_the_window(case: Case):
    """KL(q || p) = sum_k q_k (log q_k - log p_k), with q and p rebuilt independently in float64."""
    prior = make_prior(case.family)
    params = random_params(case.estimator(), prior, BATCH, DIM, seed=11)
    out = kl_run(case, prior, params)
    log_q, err_q, log_p, err_p = reference_log_tables(case, prior, out, params)
    window = out.posterior.window
    assert_table_close(out.posterior.log_pmf, log_q, err_q, "posterior table")
    prior_table = prior.truncated(window if case.family in COUNT_FAMILIES else None)
    assert_table_close(prior_table.log_pmf, log_p, err_p, "prior table")

    expected, tol = kl_and_tolerance(log_q, err_q, log_p, err_p)
    kl = out.kl.detach().double().numpy()
    assert (expected > tol).all(), "the reference KL must be distinguishable from zero for this check"
    assert (kl > 0).all()
    gap = np.abs(kl - expected)
    assert (gap <= tol).all(), f"KL {kl} vs closed form {expected}: gap {gap} > bound {tol}"


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_kl_is_zero_at_raw_like_prior(case: Case):
    """Encoder outputs ``raw_like(prior)`` broadcast to ``(B, D, raw_size)`` give KL = 0 to float32 precision."""
    estimator = case.estimator()
    prior = make_prior(case.family)
    raw = estimator.raw_like(prior)
    size = estimator.raw_size(prior)
    assert raw.shape[-1] == size
    params = raw.detach().expand(BATCH, DIM, size).clone().requires_grad_()
    out = kl_run(case, prior, params)
    log_q, err_q, log_p, err_p = reference_log_tables(case, prior, out, params)
    expected, tol = kl_and_tolerance(log_q, err_q, log_p, err_p)
    assert (np.abs(expected) <= tol).all(), f"the posterior of raw_like differs from the prior: KL {expected}"
    kl = out.kl.detach().double().numpy()
    assert (np.abs(kl) <= tol).all(), f"KL {kl} at raw_like exceeds the float32 bound {tol}"
    out.kl.sum().backward()
    assert torch.isfinite(params.grad).all()


@pytest.mark.parametrize("kind", ["explicit", "implicit"])
def test_raw_like_of_a_per_dimension_prior(kind: str):
    """A prior with one rate per latent dimension: ``raw_like`` is ``(D, raw_size)`` and gives KL = 0."""
    prior = Prior("poisson", {"rate": [0.5, 2.0, 7.0]})
    case = Case(kind, "poisson", 12)
    estimator = case.estimator()
    raw = estimator.raw_like(prior)
    assert raw.shape == (3, estimator.raw_size(prior))
    params = raw.detach().expand(BATCH, 3, raw.shape[-1]).clone().requires_grad_()
    out = kl_run(case, prior, params)
    log_q, err_q, log_p, err_p = reference_log_tables(case, prior, out, params)
    expected, tol = kl_and_tolerance(log_q, err_q, log_p, err_p)
    assert (np.abs(expected) <= tol).all()
    assert (np.abs(out.kl.detach().double().numpy()) <= tol).all()
    # The dimensions differ, so the same encoder output on every dimension is not the prior.
    shared = raw[1:2].detach().expand(BATCH, 3, raw.shape[-1]).clone()
    assert (kl_run(case, prior, shared).kl > 0).all()


@pytest.mark.parametrize("family", COUNT_FAMILIES)
@pytest.mark.parametrize("estimator_cls", [GenGSExplicit, GenGSImplicit], ids=["explicit", "implicit"])
def test_default_window_for_every_count_family(estimator_cls, family: str):
    """``window=None``: the whole support of the binomial, otherwise ``[0, n - 1]`` holding ``1 - 1e-6``.

    Works for every count prior as the configs write it (``probs`` for the Bernoulli-trial families).
    """
    prior = make_prior(family)
    estimator = estimator_cls(window=None)
    raw = estimator.raw_like(prior)
    params = raw.detach().expand(2, 1, raw.shape[-1]).clone()
    out = estimator(params, linear_objective, prior)
    window = out.posterior.window
    if family == "binomial":
        assert window == Window(0, FAMILIES["binomial"][0]["total_count"])
    else:
        assert window.low == 0
        # Independent check: P(X >= n) <= 1e-6 < P(X >= n - 1) for the prior (float64 pmf sums).
        tail = reference_upper_tail(family, count_params(prior.truncated(Window(0, 1))))
        assert tail[window.size] <= 1e-6 < tail[window.size - 1]
    assert torch.isfinite(out.kl).all()
