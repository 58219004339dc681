"""Bad input fails early with a ValueError that names the value and what is accepted."""

from __future__ import annotations

import math
import re

import pytest
import torch
from estimators.estimator_testing import make_prior

from gengs_lightning.estimators import (
    GenGSExplicit,
    GenGSImplicit,
    GenGSNonparametric,
    GenGSStraightThrough,
)

ALL = [GenGSExplicit, GenGSImplicit, GenGSStraightThrough, GenGSNonparametric]
ALL_IDS = [cls.__name__ for cls in ALL]
WINDOWED = [GenGSExplicit, GenGSImplicit, GenGSStraightThrough]
BAD_TAUS = [0, 0.0, -1, -1.0, math.nan, math.inf, -math.inf]


def build(cls, **kwargs):
    """An estimator of ``cls`` with a valid window unless one is given."""
    if cls is GenGSImplicit:
        kwargs.setdefault("window", 8)
    return cls(**kwargs)


class SpyObjective:
    """An objective that records whether it was called (``fails before any work``)."""

    def __init__(self, shape=None):
        self.calls = 0
        self.shape = shape

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        value = z.flatten(2).sum(-1)
        return value if self.shape is None else value.sum() * torch.ones(self.shape)


def value_pattern(value) -> str:
    return re.escape(repr(value))


@pytest.mark.parametrize("tau", BAD_TAUS, ids=repr)
@pytest.mark.parametrize("cls", ALL, ids=ALL_IDS)
def test_bad_temperature_at_construction(cls, tau):
    with pytest.raises(ValueError, match=rf"tau.*> 0.*got {value_pattern(tau)}"):
        build(cls, tau=tau)


@pytest.mark.parametrize("tau", BAD_TAUS + [True, "0.5", None], ids=repr)
@pytest.mark.parametrize("cls", ALL, ids=ALL_IDS)
def test_bad_temperature_in_set_temperature_leaves_tau_unchanged(cls, tau):
    estimator = build(cls, tau=0.7)
    with pytest.raises(ValueError, match=rf"tau.*> 0.*got {value_pattern(tau)}"):
        estimator.set_temperature(tau)
    assert estimator.tau.item() == pytest.approx(0.7, rel=torch.finfo(torch.float32).eps)


@pytest.mark.parametrize("num_samples", [0, -2, 1.5, True, "3"], ids=repr)
@pytest.mark.parametrize("cls", ALL, ids=ALL_IDS)
def test_bad_num_samples(cls, num_samples):
    with pytest.raises(ValueError, match=rf"num_samples.*integer >= 1.*got {value_pattern(num_samples)}"):
        build(cls, num_samples=num_samples)


@pytest.mark.parametrize(
    ("window", "pattern"),
    [
        (0, r"window must hold at least 2 outcomes: a truncation level n >= 2 .*got 0"),
        (-3, r"window must hold at least 2 outcomes: a truncation level n >= 2 .*got -3"),
        ((5, 3), r"window must hold at least 2 outcomes: .* a pair \[a, b\] with a < b.*got \(5, 3\)"),
        ((-1, 3), r"window low .*must be an integer >= 0, got -1"),
        ((1.0, 3), r"window low .*must be an integer >= 0, got 1\.0"),
        ((1, 2, 3), r"truncation level n >= 1 or a pair \[low, high\].*got \(1, 2, 3\)"),
        ("8", r"truncation level n >= 1 or a pair \[low, high\].*got '8'"),
    ],
    ids=repr,
)
@pytest.mark.parametrize("cls", WINDOWED, ids=[c.__name__ for c in WINDOWED])
def test_bad_window(cls, window, pattern):
    with pytest.raises(ValueError, match=pattern):
        cls(window=window)


@pytest.mark.parametrize("eps", [0, 0.0, 1, 1.0, 1.5, -0.1, math.nan], ids=repr)
def test_nonparametric_bad_eps(eps):
    with pytest.raises(ValueError, match=rf"eps.*\(0, 1\).*got {value_pattern(eps)}"):
        GenGSNonparametric(eps=eps)


@pytest.mark.parametrize("max_size", [0, -1, 2.5, True], ids=repr)
def test_nonparametric_bad_max_size(max_size):
    with pytest.raises(ValueError, match=rf"max_size.*integer >= 2.*got {value_pattern(max_size)}"):
        GenGSNonparametric(max_size=max_size)


WRONG_SHAPES = [
    ("poisson", (4, 2, 2)),  # wrong last dimension
    ("poisson", (4, 2)),  # 2-D
    ("poisson", (4, 2, 1, 1)),  # 4-D
    ("categorical", (4, 2, 4)),
    ("multinomial", (4, 2, 2)),
]


SHAPE_CASES = [
    (cls, family, shape)
    for cls in ALL
    for family, shape in WRONG_SHAPES
    if cls is not GenGSNonparametric or family == "poisson"  # count families only
]


@pytest.mark.parametrize(
    ("cls", "family", "shape"), SHAPE_CASES, ids=[f"{c.__name__}-{f}-{s}" for c, f, s in SHAPE_CASES]
)
def test_wrong_encoder_shape_fails_before_the_objective(cls, family, shape):
    window = None if family in ("categorical", "multinomial") else 8
    estimator = cls() if cls is GenGSNonparametric else cls(window=window)
    prior = make_prior(family)
    expected = estimator.raw_size(prior)
    objective = SpyObjective()
    pattern = rf"\(batch, latent_dim, {expected}\).*got {re.escape(str(shape))}"
    with pytest.raises(ValueError, match=pattern):
        estimator(torch.zeros(shape), objective, prior)
    assert objective.calls == 0


@pytest.mark.parametrize("bad_shape", [(4,), (3, 4), (1, 4), (2, 4, 1)], ids=repr)
@pytest.mark.parametrize("cls", ALL, ids=ALL_IDS)
def test_objective_of_wrong_shape(cls, bad_shape):
    estimator = build(cls, num_samples=2)
    prior = make_prior("poisson")
    params = torch.zeros(4, 3, estimator.raw_size(prior))
    objective = SpyObjective(bad_shape)
    with pytest.raises(ValueError, match=rf"\(2, 4\).*got {re.escape(str(bad_shape))}"):
        estimator(params, objective, prior)


@pytest.mark.parametrize("family", ["categorical", "multinomial"])
@pytest.mark.parametrize("cls", WINDOWED, ids=[c.__name__ for c in WINDOWED])
def test_window_with_a_vector_family_fails_before_the_objective(cls, family):
    estimator = cls(window=4)
    prior = make_prior(family)
    objective = SpyObjective()
    size = prior.raw_size if cls is not GenGSImplicit else 3
    with pytest.raises(ValueError, match=rf"{family}.*takes no window, got"):
        estimator(torch.zeros(2, 1, size), objective, prior)
    assert objective.calls == 0


@pytest.mark.parametrize("family", ["categorical", "multinomial"])
def test_nonparametric_with_a_vector_family_fails_before_the_objective(family):
    estimator = GenGSNonparametric()
    prior = make_prior(family)
    objective = SpyObjective()
    with pytest.raises(ValueError, match=rf"GenGSNonparametric needs a count family; {family}"):
        estimator(torch.zeros(2, 1, 3), objective, prior)
    assert objective.calls == 0


@pytest.mark.parametrize(("cls", "window"), [(GenGSExplicit, 30), (GenGSImplicit, (5, 25)), (GenGSStraightThrough, 22)])
def test_window_beyond_the_binomial_support_fails_before_the_objective(cls, window):
    estimator = cls(window=window)
    prior = make_prior("binomial")  # support [0, 20]
    objective = SpyObjective()
    size = 1 if cls is not GenGSImplicit else 21
    with pytest.raises(ValueError, match=r"window \[\d+, \d+\] exceeds the binomial support \[0, 20\]"):
        estimator(torch.zeros(2, 1, size), objective, prior)
    assert objective.calls == 0
