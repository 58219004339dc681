"""GenGSNonparametric: the per-batch quantile window, its size and the tail mass it leaves out."""

from __future__ import annotations

import pytest
import torch
from estimators.estimator_testing import (
    COUNT_FAMILIES,
    REFERENCE_SUPPORT,
    U32,
    U64,
    count_params,
    linear_objective,
    make_prior,
    num_terms,
    reference_cdf,
    reference_upper_tail,
)

from gengs_lightning.distributions import Window, quantile_window
from gengs_lightning.estimators import GenGSNonparametric

BATCH, DIM = 6, 2
#: Centre of the encoder outputs per family, so that windows are wide and (two-sided) start above 0.
LOCATION = {"poisson": 8.0, "geometric": -1.0, "negative_binomial": 1.0, "binomial": 0.0}


def np_run(family: str, eps: float, max_size: int = 256, two_sided: bool = False, seed: int = 0):
    estimator = GenGSNonparametric(eps=eps, max_size=max_size, two_sided=two_sided)
    prior = make_prior(family)
    generator = torch.Generator().manual_seed(seed)
    params = (LOCATION[family] + 0.5 * torch.randn(BATCH, DIM, 1, generator=generator)).requires_grad_()
    torch.manual_seed(seed + 1)
    out = estimator(params, linear_objective, prior)
    return estimator, prior, params, out


def reference_window(family: str, params: dict, eps: float, max_size: int, two_sided: bool) -> Window:
    """The smallest window holding ``1 - eps`` of every member, from float64 pmf sums.

    One-sided ``[0, n - 1]``: the smallest ``n`` with ``P(X >= n) <= eps``. Two-sided ``[a, b]``: the
    largest ``a`` with ``P(X < a) <= eps / 2`` and the smallest ``b`` with ``P(X > b) <= eps / 2``, over
    the batch. ``b`` is capped at ``max_size - 1``.
    """
    side = eps / 2 if two_sided else eps
    tail = reference_upper_tail(family, params).reshape(-1, REFERENCE_SUPPORT)  # P(X >= k)
    above = tail[:, 1:]  # P(X > k) for k = 0 .. REFERENCE_SUPPORT - 2
    high = int((above > side).sum(-1).max())  # first k with P(X > k) <= side (tails are decreasing)
    high = min(high, max_size - 1)
    low = 0
    if two_sided:
        cdf = reference_cdf(family, params).reshape(-1, REFERENCE_SUPPORT)
        low = min(int((cdf <= side).sum(-1).min()), high)  # first k with P(X <= k) > side
    return Window(low, high)


@pytest.mark.parametrize("two_sided", [False, True], ids=["one_sided", "two_sided"])
@pytest.mark.parametrize("eps", [1e-4, 1e-2])
@pytest.mark.parametrize("family", COUNT_FAMILIES)
def test_window_is_the_quantile_window_of_the_posterior(family: str, eps: float, two_sided: bool):
    _, prior, params, out = np_run(family, eps, two_sided=two_sided)
    posterior = out.posterior
    window = posterior.window

    # The package's quantile_window on the posterior's own parameters ...
    family_params = prior.family.params_from_raw(params.detach(), **prior.structural)
    assert window == quantile_window(prior.family, family_params, eps, 256, two_sided)
    # ... and an independent float64 computation of the same window.
    expected = reference_window(family, count_params(posterior), eps, 256, two_sided)
    assert window == expected
    if two_sided and eps == 1e-2 and family in ("poisson", "binomial"):
        assert window.low > 0, "the two-sided case should cut the left tail here"
    assert out.stats["trunc_n"].item() == window.size

    # Tail mass: every member leaves at most eps outside (float32 rounding of a float64 mass: U32);
    # the logged value is the batch mean (B * D + 1 float32 roundings).
    tail = posterior.tail_mass.detach().double()
    assert tail.shape == (BATCH, DIM)
    assert (tail <= eps * (1 + U32) + num_terms(window) * U64).all()
    mean = tail.mean().item()
    assert abs(out.stats["trunc_tail_mass"].item() - mean) <= (BATCH * DIM + 1) * U32 * mean
    assert out.stats["trunc_tail_mass"].item() <= eps * (1 + (BATCH * DIM + 2) * U32)
    # Minimality: one outcome fewer on the right would leave more than eps (one-sided) outside.
    if not two_sided and window.high > 0:
        upper = reference_upper_tail(family, count_params(posterior)).reshape(-1, REFERENCE_SUPPORT)
        assert (upper[:, window.high] > eps).any()


@pytest.mark.parametrize("two_sided", [False, True], ids=["one_sided", "two_sided"])
@pytest.mark.parametrize("family", COUNT_FAMILIES)
def test_max_size_caps_the_window_and_the_tail_mass_then_exceeds_eps(family: str, two_sided: bool):
    eps, max_size = 1e-4, 4
    _, _, _, out = np_run(family, eps, max_size=max_size, two_sided=two_sided)
    window = out.posterior.window
    params = count_params(out.posterior)
    expected = reference_window(family, params, eps, max_size, two_sided)
    assert window == expected and window.high == max_size - 1
    assert out.stats["trunc_n"].item() == window.size <= max_size

    tail = reference_upper_tail(family, params).reshape(BATCH, DIM, REFERENCE_SUPPORT)
    below = (
        reference_cdf(family, params).reshape(BATCH, DIM, REFERENCE_SUPPORT)[..., window.low - 1] if window.low else 0.0
    )
    outside = (tail[..., window.high + 1] + below).mean().item()
    assert outside > eps
    reported = out.stats["trunc_tail_mass"].item()
    assert reported > eps
    assert abs(reported - outside) <= (BATCH * DIM + 2) * U32 * outside + num_terms(window) * U64


def test_window_follows_the_batch():
    """The window is chosen per call: larger rates in the batch give a wider window."""
    estimator = GenGSNonparametric(eps=1e-4)
    prior = make_prior("poisson")
    small = estimator(torch.full((2, 1, 1), 1.0), linear_objective, prior)
    large = estimator(torch.full((2, 1, 1), 10.0), linear_objective, prior)
    mixed = estimator(torch.tensor([1.0, 10.0]).reshape(2, 1, 1), linear_objective, prior)
    assert small.stats["trunc_n"] < large.stats["trunc_n"]
    assert mixed.stats["trunc_n"] == large.stats["trunc_n"]
