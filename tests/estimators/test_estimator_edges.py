"""Estimators at the edges of what they accept: one-outcome windows, untruncated rates that overflow the sampler."""

from __future__ import annotations

import inspect
import re

import pytest
import torch
from estimators.estimator_testing import make_prior

import gengs_lightning.estimators as estimators
from gengs_lightning.estimators import GenGSNonparametric

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
