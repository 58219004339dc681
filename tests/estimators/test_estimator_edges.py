"""Estimators at the edges of what they accept: one-outcome windows, untruncated rates that overflow the sampler."""

from __future__ import annotations

import inspect
import math
import re

import pytest
import torch
from estimators.estimator_testing import make_prior

import gengs_lightning.estimators as estimators
from gengs_lightning.distributions import Prior, TruncatedDiscrete, Window
from gengs_lightning.estimators import GenGSNonparametric, ParameterRangeError, edge_mass

#: Every concrete estimator the package exports.
CONCRETE = sorted(
    name
    for name in estimators.__all__
    if isinstance(getattr(estimators, name), type)
    and issubclass(getattr(estimators, name), estimators.Estimator)
    and not inspect.isabstract(getattr(estimators, name))
)
#: The estimators that take a window, with the name of their window argument.
WINDOWED = {
    name: arg
    for name in CONCRETE
    for arg in ("window", "truncation")
    if arg in inspect.signature(getattr(estimators, name)).parameters
}
#: Estimators that need more than one sample.
MIN_SAMPLES = {"ReinforceLOO": 2, "VIMCO": 2, "UnOrd": 2}


def test_every_estimator_but_the_nonparametric_one_takes_a_window():
    assert set(CONCRETE) - set(WINDOWED) == {"GenGSNonparametric"}


@pytest.mark.parametrize("spec", [1, (3, 3), [0, 0]], ids=repr)
@pytest.mark.parametrize("name", sorted(WINDOWED))
def test_a_window_of_one_outcome_is_rejected_at_construction(name, spec):
    arg = WINDOWED[name]
    with pytest.raises(ValueError, match=rf"^{arg} must hold at least 2 outcomes: a truncation level n >= 2 or a pair"):
        getattr(estimators, name)(**{arg: spec})


@pytest.mark.parametrize("spec", [0, -3, (5, 3)], ids=repr)
@pytest.mark.parametrize("name", sorted(WINDOWED))
def test_an_empty_window_gets_the_same_message(name, spec):
    arg = WINDOWED[name]
    with pytest.raises(ValueError, match=rf"^{arg} must hold at least 2 outcomes.*got {re.escape(repr(spec))}$"):
        getattr(estimators, name)(**{arg: spec})


@pytest.mark.parametrize("name", sorted(WINDOWED))
def test_a_window_of_two_outcomes_trains(name):
    """The smallest accepted window gives a gradient with every estimator (one Poisson latent, toy objective)."""
    estimator = getattr(estimators, name)(**{WINDOWED[name]: 2}, num_samples=MIN_SAMPLES.get(name, 1))
    prior = make_prior("poisson")
    raw = estimator.raw_like(prior).expand(4, 3, -1).clone().requires_grad_()
    out = estimator(raw, lambda z: (z.flatten(2).sum(-1) - 1.0).square(), prior, kl=False)
    (grad,) = torch.autograd.grad(out.surrogate, [raw], allow_unused=False)
    assert torch.isfinite(grad).all()


@pytest.mark.parametrize("name", sorted(WINDOWED))
def test_the_default_window_of_a_prior_with_its_mass_on_one_outcome_trains(name):
    """``window=None`` on a Poisson prior of rate ``1e-8``: a window of two outcomes, not a constant latent."""
    estimator = getattr(estimators, name)(num_samples=MIN_SAMPLES.get(name, 1))
    prior = Prior("poisson", {"rate": 1e-8})
    raw = (estimator.raw_like(prior) + 1.0).expand(4, 3, -1).clone().requires_grad_()
    out = estimator(raw, lambda z: (z.flatten(2).sum(-1) - 1.0).square(), prior)
    assert getattr(out.posterior, "window", Window(0, 1)).size >= 2
    (grad,) = torch.autograd.grad(out.surrogate, [raw])
    assert torch.isfinite(grad).all()


def test_the_default_window_of_a_one_outcome_support_is_rejected():
    prior = Prior("binomial", {"total_count": 0, "probs": 0.5})
    estimator = estimators.GenGSExplicit()
    with pytest.raises(ValueError, match=r"^the default window must hold at least 2 outcomes \(one outcome is a"):
        estimator(estimator.raw_like(prior).expand(4, 3, -1).clone(), _linear, prior)


@pytest.mark.parametrize("max_size", [0, 1, 2.5, True], ids=repr)
def test_nonparametric_needs_room_for_two_outcomes(max_size):
    with pytest.raises(ValueError, match=rf"max_size must be an integer >= 2, got {max_size!r}"):
        GenGSNonparametric(max_size=max_size)


@pytest.mark.parametrize(("raw", "two_sided"), [(-12.0, False), (-12.0, True), (40.0, True)])
def test_nonparametric_widens_a_one_outcome_window(raw, two_sided):
    """A posterior that holds 1 - eps on one outcome (a tiny rate; a two-sided window at the cap) still gets two."""
    estimator = GenGSNonparametric(eps=1e-4, max_size=8, two_sided=two_sided)
    params = torch.full((3, 1, 1), raw, requires_grad=True)
    out = estimator(params, lambda z: z.flatten(2).sum(-1).square(), make_prior("poisson"), kl=False)
    assert out.posterior.window.size == 2
    assert out.posterior.window.high <= 7
    (grad,) = torch.autograd.grad(out.surrogate, [params])
    assert torch.isfinite(grad).all()


SCORE_FUNCTION = [name for name in CONCRETE if issubclass(getattr(estimators, name), estimators.ScoreFunctionEstimator)]


def _linear(z: torch.Tensor) -> torch.Tensor:
    return z.flatten(2).sum(-1)


@pytest.mark.parametrize(
    ("family", "raw", "shown"),
    [
        ("poisson", 1e30, "rate=1e+30 (mean 1e+30)"),
        ("poisson", 1e19, "rate=1e+19 (mean 1e+19)"),
        ("negative_binomial", 40.0, "total_count=3, logits=40 (mean 7.06e+17)"),
        ("geometric", -1e30, "logits=-1e+30 (mean inf)"),
        ("poisson", math.nan, "rate=nan (mean nan)"),
    ],
)
@pytest.mark.parametrize("name", SCORE_FUNCTION)
def test_untruncated_parameters_beyond_the_sampler_are_rejected(name, family, raw, shown):
    """torch's samplers overflow (Poisson rate 1e19: draws of -9.2e18) or return no draw; the message names the value."""
    estimator = getattr(estimators, name)(num_samples=MIN_SAMPLES.get(name, 1))
    prior = make_prior(family)
    params = estimator.raw_like(prior).expand(4, 3, -1).clone()
    params[2, 1] = raw
    pattern = (
        rf"^{name} samples the untruncated {family} family, whose mean must be at most 2\*\*53 .*; the encoder "
        rf"output {re.escape(f'{raw:.4g}')} at \[2, 1\] gives {re.escape(shown)}\. .*truncation"
    )
    with pytest.raises(ParameterRangeError, match=pattern):
        estimator(params, _linear, prior)


@pytest.mark.parametrize("name", SCORE_FUNCTION)
def test_untruncated_parameters_below_the_limit_and_truncated_ones_sample(name):
    """A rate of 1e15 (below 2**53) samples; with a truncation window any rate does (the edges take the mass)."""
    prior = make_prior("poisson")
    samples = MIN_SAMPLES.get(name, 1)
    for estimator, raw in [
        (getattr(estimators, name)(num_samples=samples), 1e15),
        (getattr(estimators, name)(num_samples=samples, truncation=8), 1e30),
    ]:
        params = torch.full((4, 3, 1), raw, requires_grad=True)
        out = estimator(params, _linear, prior, kl=False)
        (grad,) = torch.autograd.grad(out.surrogate, [params])
        assert torch.isfinite(out.loss).all() and torch.isfinite(grad).all()


#: IGR's posterior table is a Monte Carlo or quadrature estimate, too costly to build every step for a stat.
EDGE_REPORTING = sorted(set(WINDOWED) - {"IGR"})


@pytest.mark.parametrize("name", EDGE_REPORTING)
def test_every_windowed_estimator_reports_the_mass_on_the_window_edge(name):
    """A posterior centred in [0, 7] has little mass on the edge 7; one of rate 100 has all of it there."""
    prior = make_prior("poisson")
    for rate, low, high in [(2.0, 0.0, 0.005), (100.0, 0.999, 1.0)]:
        estimator = getattr(estimators, name)(**{WINDOWED[name]: 8}, num_samples=MIN_SAMPLES.get(name, 1))
        params = estimator.raw_like(Prior("poisson", {"rate": rate})).expand(4, 3, -1).clone()
        stats = estimator(params, _linear, prior).stats
        assert low <= float(stats["trunc_edge_mass"]) <= high, (name, rate)
        assert float(stats["trunc_n"]) == 8.0


def table(family: str, params: dict, window) -> TruncatedDiscrete:
    prior = Prior(family, params)
    return prior.truncated(prior.resolve_window(window)), prior


@pytest.mark.parametrize(
    ("family", "params", "window", "expected"),
    [
        ("poisson", {"rate": 0.5}, 8, 0.0),  # 0 is the support's own end: P(0) = 0.61 is no cut
        ("poisson", {"rate": 1e-3}, (5, 15), 1.0),  # a two-sided window cuts below 5
        ("binomial", {"total_count": 20, "probs": 0.999}, None, 0.0),  # the whole support: 20 is no cut
        ("binomial", {"total_count": 20, "probs": 0.999}, 12, 1.0),  # [0, 11] cuts above 11
        ("categorical", {"probs": [0.1, 0.9]}, None, 0.0),  # no window
    ],
)
def test_only_edges_where_the_window_cuts_support_count(family, params, window, expected):
    posterior, prior = table(family, params, window)
    assert float(edge_mass(posterior, prior)) == pytest.approx(expected, abs=1e-3)


def test_the_edge_mass_is_the_worst_latent_dimension_averaged_over_the_batch():
    prior = make_prior("poisson")
    raw = torch.tensor([[[-5.0], [100.0]], [[-5.0], [-5.0]]])  # dimension 1 pinned at 7 in one of two examples
    posterior = prior.posterior(raw, Window(0, 7))
    assert float(edge_mass(posterior, prior)) == pytest.approx(0.5, abs=1e-3)
