"""``Prior``: a named family member built from a config.

Covers: error messages (unknown family listing the accepted names, unknown/missing parameters, invalid
values, a window for a family without one); the default window covers ``1 - 1e-6`` of the prior;
table caching and its invalidation by an in-place change of a buffer (and by a dtype change);
``posterior(raw, window)`` builds the family from encoder outputs; ``to_raw``/``from_raw`` round trip;
``raw_size`` and ``untruncated``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Binomial, Geometric, NegativeBinomial, Poisson

from gengs_lightning.distributions import (
    FAMILIES,
    Prior,
    TruncatedBinomial,
    TruncatedCategorical,
    TruncatedGeometric,
    TruncatedMultinomial,
    TruncatedNegativeBinomial,
    TruncatedPoisson,
    Window,
    family_class,
)

DEFAULT_EPS = 1e-6


# ---------------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------------
def test_unknown_family_lists_accepted_names():
    with pytest.raises(ValueError) as info:
        Prior("poison", {"rate": 2.0})
    message = str(info.value)
    assert "poison" in message
    for name in ("poisson", "geometric", "negative_binomial", "binomial", "categorical", "multinomial"):
        assert name in message
    assert set(FAMILIES) == {"poisson", "geometric", "negative_binomial", "binomial", "categorical", "multinomial"}
    with pytest.raises(ValueError):
        family_class(None)


def test_unknown_parameter_names_are_reported():
    with pytest.raises(ValueError) as info:
        Prior("poisson", {"lam": 2.0})
    assert "lam" in str(info.value) and "rate" in str(info.value)
    with pytest.raises(ValueError) as info:
        Prior("negative_binomial", {"total_count": 3, "p": 0.5})
    assert "'p'" in str(info.value) and "probs" in str(info.value)


def test_missing_parameter_is_a_value_error():
    with pytest.raises(ValueError):
        Prior("poisson", {})
    with pytest.raises(ValueError):
        Prior("binomial", {"probs": 0.5})  # no total_count


@pytest.mark.parametrize(
    ("family", "params"),
    [
        ("poisson", {"rate": -1.0}),
        ("poisson", {"rate": float("nan")}),
        ("poisson", {"rate": 0.0}),
        ("poisson", {"rate": [2.0, -1.0]}),
        ("geometric", {"probs": 1.5}),
        ("geometric", {"probs": -0.1}),
        ("negative_binomial", {"total_count": 3, "probs": 1.5}),
        ("negative_binomial", {"total_count": 3, "probs": 1.0}),
        ("negative_binomial", {"total_count": -2.0, "probs": 0.5}),
        ("binomial", {"total_count": 10, "probs": 1.5}),
        ("binomial", {"total_count": 2.5, "probs": 0.5}),
        ("binomial", {"total_count": -1, "probs": 0.5}),
        ("categorical", {"probs": [0.5, 0.6]}),
        ("multinomial", {"total_count": 3, "probs": [0.2, -0.1, 0.9]}),
    ],
    ids=str,
)
def test_invalid_values_raise_value_error(family, params):
    with pytest.raises(ValueError, match=family):
        Prior(family, params)


@pytest.mark.parametrize(
    ("family", "params"),
    [("categorical", {"probs": [0.2, 0.8]}), ("multinomial", {"total_count": 3, "probs": [0.2, 0.8]})],
)
def test_window_for_a_family_without_one_raises(family, params):
    prior = Prior(family, params)
    assert prior.resolve_window(None) is None
    with pytest.raises(ValueError, match="window"):
        prior.resolve_window(5)
    with pytest.raises(ValueError):
        prior.resolve_window((0, 3))


def test_window_beyond_binomial_support_raises():
    prior = Prior("binomial", {"total_count": 10, "probs": 0.3})
    assert prior.resolve_window(None) == Window(0, 10)
    with pytest.raises(ValueError, match="support"):
        prior.truncated(prior.resolve_window((2, 11)))


# ---------------------------------------------------------------------------------------------------
# default window
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("family", "params"),
    [
        ("poisson", {"rate": 2.0}),
        ("poisson", {"rate": [0.5, 40.0]}),
        ("geometric", {"logits": -1.0}),
        ("geometric", {"probs": 0.25}),
        ("negative_binomial", {"total_count": 3.0, "probs": 0.4}),
        ("negative_binomial", {"total_count": 0.5, "logits": [0.0, 1.0]}),
        ("binomial", {"total_count": 12, "probs": 0.3}),
    ],
    ids=str,
)
def test_default_window_covers_one_minus_eps(family, params, float64_default):
    prior = Prior(family, params)
    window = prior.resolve_window(None)
    assert isinstance(window, Window) and window.low == 0
    table = prior.truncated(window)
    assert (table.tail_mass <= DEFAULT_EPS).all(), (window, table.tail_mass)
    if family != "binomial" and window.high > 0:  # minimal: one less leaves more than 1e-6 outside
        assert (prior.truncated(Window(0, window.high - 1)).tail_mass > DEFAULT_EPS).any()


@pytest.mark.parametrize(
    ("family", "params"),
    [
        ("poisson", {"rate": 1e-8}),
        ("poisson", {"rate": [1e-9, 1e-12]}),
        ("geometric", {"probs": 1.0 - 1e-7}),
        ("negative_binomial", {"total_count": 1e-7, "probs": 0.5}),
    ],
    ids=str,
)
def test_a_default_window_holds_two_outcomes_when_the_prior_has_its_mass_on_one(family, params):
    """``1 - 1e-6`` of the mass on 0 would give ``[0, 0]``, a constant latent: the default is ``[0, 1]``."""
    prior = Prior(family, params)
    assert prior.resolve_window(None) == Window(0, 1)


def test_a_default_window_of_a_one_outcome_support_is_rejected():
    prior = Prior("binomial", {"total_count": 0, "probs": 0.3})
    with pytest.raises(
        ValueError,
        match=r"^the default window must hold at least 2 outcomes \(one outcome is a constant latent, with no "
        r"gradient\); the binomial prior \{'total_count': 0\} has the support \[0, 0\]$",
    ):
        prior.resolve_window(None)


# ---------------------------------------------------------------------------------------------------
# caching
# ---------------------------------------------------------------------------------------------------
def test_tables_are_cached_and_recomputed_after_in_place_change():
    prior = Prior("poisson", {"rate": 2.0})
    window = Window(0, 19)
    first = prior.truncated(window)
    assert prior.truncated(window) is first
    assert prior.truncated(Window(0, 9)) is not first
    default = prior.resolve_window(None)
    assert prior.resolve_window(None) is default

    with torch.no_grad():
        prior.rate.fill_(9.0)  # in place: same tensor, new version
    second = prior.truncated(window)
    assert second is not first
    torch.testing.assert_close(second.pmf, TruncatedPoisson(torch.tensor(9.0), window).pmf, rtol=0, atol=0)
    torch.testing.assert_close(first.pmf, TruncatedPoisson(torch.tensor(2.0), window).pmf, rtol=0, atol=0)
    assert prior.resolve_window(None).high > default.high  # the default window follows the rate

    prior.double()  # new buffers (dtype): recomputed in float64
    third = prior.truncated(window)
    assert third is not second and third.log_pmf.dtype == torch.float64
    assert not third.log_pmf.requires_grad


# ---------------------------------------------------------------------------------------------------
# posterior from encoder outputs, raw round trip
# ---------------------------------------------------------------------------------------------------
RAW = torch.tensor([[-3.0], [-0.2], [0.7], [4.0]], dtype=torch.float64)


@pytest.mark.parametrize(
    ("family", "params", "window", "expected"),
    [
        ("poisson", {"rate": 2.0}, Window(0, 15), lambda raw, w: TruncatedPoisson(F.softplus(raw[..., 0]), w)),
        ("poisson", {"rate": 2.0}, Window(2, 9), lambda raw, w: TruncatedPoisson(F.softplus(raw[..., 0]), w)),
        ("geometric", {"probs": 0.3}, Window(0, 20), lambda raw, w: TruncatedGeometric(logits=raw[..., 0], window=w)),
        (
            "negative_binomial",
            {"total_count": 3.0, "probs": 0.4},
            Window(0, 25),
            lambda raw, w: TruncatedNegativeBinomial(3.0, logits=raw[..., 0], window=w),
        ),
        (
            "binomial",
            {"total_count": 8, "probs": 0.4},
            None,
            lambda raw, w: TruncatedBinomial(8, logits=raw[..., 0]),
        ),
    ],
    ids=["poisson", "poisson-two-sided", "geometric", "negative_binomial", "binomial"],
)
def test_posterior_builds_family_from_raw(family, params, window, expected, float64_default):
    prior = Prior(family, params)
    raw = RAW.clone().requires_grad_()
    posterior = prior.posterior(raw, window)
    assert isinstance(posterior, FAMILIES[family])
    assert posterior.batch_shape == (4,)
    reference = expected(RAW, window)
    torch.testing.assert_close(posterior.log_pmf, reference.log_pmf, rtol=0, atol=0)
    assert posterior.log_pmf.requires_grad  # differentiable in the encoder outputs
    (grad,) = torch.autograd.grad(posterior.mean.sum(), raw)
    assert torch.isfinite(grad).all() and (grad != 0).all()
    assert prior.raw_size == 1


@pytest.mark.parametrize("family", ["categorical", "multinomial"])
def test_vector_posterior_builds_family_from_raw(family, float64_default):
    params = {"probs": [0.2, 0.3, 0.5]} if family == "categorical" else {"total_count": 3, "probs": [0.2, 0.3, 0.5]}
    prior = Prior(family, params)
    assert prior.raw_size == 3
    raw = torch.randn(4, 3, generator=torch.Generator().manual_seed(31))
    posterior = prior.posterior(raw, None)
    if family == "categorical":
        torch.testing.assert_close(posterior.pmf, torch.softmax(raw, -1), rtol=0, atol=1e-15)
    else:
        reference = torch.distributions.Multinomial(3, logits=raw.unsqueeze(-2)).log_prob(posterior.outcomes)
        torch.testing.assert_close(posterior.log_pmf, reference, rtol=0, atol=1e-12)


MEMBERS = {
    "poisson": (lambda: TruncatedPoisson(torch.tensor([1e-3, 0.5, 7.0, 50.0]), Window(0, 80)), {}),
    "geometric": (lambda: TruncatedGeometric(probs=torch.tensor([0.05, 0.5, 0.9]), window=(1, 30)), {}),
    "negative_binomial": (
        lambda: TruncatedNegativeBinomial(2.5, probs=torch.tensor([0.2, 0.7]), window=40),
        {"total_count": 2.5},
    ),
    "binomial": (lambda: TruncatedBinomial(7, probs=torch.tensor([0.1, 0.6])), {"total_count": 7}),
    "categorical": (lambda: TruncatedCategorical(probs=torch.tensor([[0.1, 0.9], [0.5, 0.5]])), {}),
    "multinomial": (lambda: TruncatedMultinomial(4, probs=torch.tensor([0.3, 0.2, 0.5])), {"total_count": 4}),
}


@pytest.mark.parametrize("family", list(MEMBERS))
def test_to_raw_round_trips_through_from_raw(family, float64_default):
    build, structural = MEMBERS[family]
    member = build()
    cls = type(member)
    rebuilt = cls.from_raw(member.to_raw(), getattr(member, "window", None), **structural)
    assert type(rebuilt) is cls
    assert rebuilt.to_raw().shape[-1] == cls.raw_size(**({"probs": member.probs} if not cls.truncatable else {}))
    torch.testing.assert_close(rebuilt.log_pmf, member.log_pmf, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(rebuilt.to_raw(), member.to_raw(), rtol=1e-12, atol=1e-12)


def test_untruncated_and_repr(float64_default):
    cases = [
        (Prior("poisson", {"rate": 2.0}), Poisson, 2.0),
        (Prior("geometric", {"probs": 0.25}), Geometric, 3.0),
        (Prior("negative_binomial", {"total_count": 3.0, "probs": 0.4}), NegativeBinomial, 2.0),
        (Prior("binomial", {"total_count": 10, "probs": 0.3}), Binomial, 3.0),
    ]
    for prior, cls, mean in cases:
        untruncated = prior.untruncated()
        assert isinstance(untruncated, cls)
        torch.testing.assert_close(untruncated.mean, torch.tensor(mean), rtol=1e-12, atol=1e-12)
        assert prior.family.family_name in repr(prior)
    # a list gives one value per latent dimension
    prior = Prior("poisson", {"rate": [1.0, 2.0, 3.0]})
    assert prior.truncated(Window(0, 9)).batch_shape == (3,)
    assert "rate" in dict(prior.named_buffers())


def test_categorical_prior_from_logits():
    """Bug (see the report): a categorical prior given by logits fails with AttributeError."""
    prior = Prior("categorical", {"logits": [0.0, 1.0, 2.0]})
    torch.testing.assert_close(prior.truncated(None).pmf, torch.softmax(torch.tensor([0.0, 1.0, 2.0]), -1))
