"""Estimators are modules: the temperature is a buffer that is saved, loaded and moved with them."""

from __future__ import annotations

import io

import pytest
import torch
from estimators.estimator_testing import linear_objective, make_prior

from gengs_lightning.estimators import (
    Estimator,
    GenGSExplicit,
    GenGSImplicit,
    GenGSNonparametric,
    GenGSStraightThrough,
)

FACTORIES = {
    "explicit": lambda tau: GenGSExplicit(window=8, tau=tau),
    "implicit": lambda tau: GenGSImplicit(window=8, tau=tau),
    "straight_through": lambda tau: GenGSStraightThrough(window=8, tau=tau),
    "nonparametric": lambda tau: GenGSNonparametric(tau=tau),
}
KINDS = list(FACTORIES)


def as_float32(value: float) -> float:
    """``value`` as the float32 buffer stores it."""
    return torch.tensor(value, dtype=torch.float32).item()


@pytest.mark.parametrize("kind", KINDS)
def test_tau_is_a_persistent_buffer(kind: str):
    estimator = FACTORIES[kind](0.3)
    assert isinstance(estimator, (torch.nn.Module, Estimator))
    assert "tau" in dict(estimator.named_buffers())
    state = estimator.state_dict()
    assert list(state) == ["tau"]
    assert state["tau"].item() == as_float32(0.3)
    assert list(estimator.parameters()) == []


@pytest.mark.parametrize("kind", KINDS)
def test_set_temperature_writes_in_place(kind: str):
    estimator = FACTORIES[kind](1.0)
    buffer = estimator.tau
    estimator.set_temperature(0.05)
    assert estimator.tau is buffer
    assert estimator.tau.item() == as_float32(0.05)
    estimator.set_temperature(2)  # an int is a valid temperature
    assert estimator.tau.item() == 2.0


@pytest.mark.parametrize("kind", KINDS)
def test_tau_moves_with_to_dtype(kind: str):
    estimator = FACTORIES[kind](0.3).to(torch.float64)
    assert estimator.tau.dtype == torch.float64
    assert estimator.tau.item() == as_float32(0.3)  # converted, not recomputed
    estimator.set_temperature(0.1)
    assert estimator.tau.dtype == torch.float64 and estimator.tau.item() == 0.1

    prior = make_prior("poisson")
    generator = torch.Generator().manual_seed(0)
    params = torch.randn(3, 2, estimator.raw_size(prior), dtype=torch.float64, generator=generator)
    params.requires_grad_()
    out = estimator(params, linear_objective, prior)
    assert out.sample.dtype == torch.float64 and out.loss.dtype == torch.float64
    out.surrogate.backward()
    assert torch.isfinite(params.grad).all()

    back = estimator.to(torch.float32)
    assert back.tau.dtype == torch.float32 and back.tau.item() == as_float32(0.1)


@pytest.mark.parametrize("kind", KINDS)
def test_tau_survives_save_and_load_state_dict(kind: str):
    source = FACTORIES[kind](0.3)
    source.set_temperature(0.07)
    buffer = io.BytesIO()
    torch.save(source.state_dict(), buffer)
    buffer.seek(0)

    target = FACTORIES[kind](1.0)
    result = target.load_state_dict(torch.load(buffer, weights_only=True))
    assert not result.missing_keys and not result.unexpected_keys
    assert target.tau.item() == as_float32(0.07)
    # A float64 checkpoint loads into a float32 estimator (copied into the existing buffer).
    target.load_state_dict({"tau": torch.tensor(0.25, dtype=torch.float64)})
    assert target.tau.dtype == torch.float32 and target.tau.item() == 0.25


@pytest.mark.parametrize("kind", KINDS)
def test_loaded_temperature_is_the_one_used(kind: str):
    """An estimator loaded with tau draws exactly what one built with tau draws from the same noise."""
    prior = make_prior("poisson")
    loaded = FACTORIES[kind](1.0)
    loaded.load_state_dict(FACTORIES[kind](0.2).state_dict())
    built, default = FACTORIES[kind](0.2), FACTORIES[kind](1.0)
    params = torch.randn(5, 2, loaded.raw_size(prior), generator=torch.Generator().manual_seed(0))

    def draw(estimator):
        torch.manual_seed(1)
        return estimator(params, linear_objective, prior, kl=False).sample

    assert torch.equal(draw(loaded), draw(built))
    if kind != "straight_through":  # hard samples do not depend on tau
        assert not torch.equal(draw(loaded), draw(default))
