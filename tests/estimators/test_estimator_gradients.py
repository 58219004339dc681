"""Monte Carlo checks of the relaxed samples: unbiased pathwise gradients and the tau -> 0 limit.

Explicit GenGS on a Poisson latent, ``z = sum_k c_k softmax((log pi(rate) + g) / tau)_k`` with Gumbel
noise ``g``, ``rate = softplus(raw)``. Every tolerance is a multiple (4) of a standard error estimated
from the same draws.
"""

from __future__ import annotations

import math

import torch
from estimators.estimator_testing import U64, num_terms, reference_count_log_table

from gengs_lightning.distributions import Prior
from gengs_lightning.estimators import GenGSExplicit, GenGSStraightThrough

RAW = 0.8  # rate = softplus(0.8) ~ 1.17
WINDOW = 5
TAU = 0.5


def identity(z: torch.Tensor) -> torch.Tensor:
    return z.reshape(z.shape[0], z.shape[1])


def relaxed_draws(raw: float, num: int, seed: int, estimator=None, dtype=torch.float64, tau: float = TAU):
    """``num`` independent relaxed samples (one per batch row) at encoder output ``raw``; the params too."""
    estimator = estimator or GenGSExplicit(window=WINDOW, tau=tau)
    params = torch.full((num, 1, 1), raw, dtype=dtype, requires_grad=True)
    torch.manual_seed(seed)
    out = estimator(params, identity, Prior("poisson", {"rate": 2.0}), kl=False)
    return out, params


def standard_error(x: torch.Tensor) -> float:
    return x.std().item() / math.sqrt(x.numel())


def test_pathwise_gradient_matches_a_common_random_numbers_finite_difference():
    """Mean of dz/draw over draws vs the finite difference of E[z] at raw +- h with the same noise.

    Both points use the same seed (common random numbers), so the finite difference is taken draw by
    draw and compared with the autograd derivative of the same draw; the pair's Monte Carlo error is
    4 standard errors of the per-draw difference. The finite difference is Richardson-extrapolated
    (steps h and 2h, truncation error O(h^4), negligible at h = 1e-4); its float64 rounding error is
    bounded by ``2 (n + 4 + m (1 + max |log pi|) / tau) U64 max|c| / h`` (``m = num_terms``): the relaxed value's
    own roundings (softmax and an n-term dot product) plus the table's (see ``count_table_error``),
    which move z by at most max|c| / tau per unit of log-mass, divided by the step.
    """
    num = 50_000
    out, params = relaxed_draws(RAW, num, seed=1)
    (grad,) = torch.autograd.grad(out.sample.sum(), params)
    pathwise = grad.flatten()

    def draws(raw: float) -> torch.Tensor:
        return relaxed_draws(raw, num, seed=1)[0].sample.detach().flatten()

    h = 1e-4
    fd_h = (draws(RAW + h) - draws(RAW - h)) / (2 * h)
    fd_2h = (draws(RAW + 2 * h) - draws(RAW - 2 * h)) / (4 * h)
    finite_difference = (4 * fd_h - fd_2h) / 3
    difference = pathwise - finite_difference

    max_log_pi = out.posterior.log_pmf.abs().max().item()
    terms = num_terms(out.posterior.window)
    rounding = 2 * (WINDOW + 4 + terms * (1 + max_log_pi) / TAU) * U64 * (WINDOW - 1) / h
    tol = 4 * standard_error(difference) + rounding
    mean = pathwise.mean().item()
    assert abs(mean) > 8 * standard_error(pathwise), "the gradient must be resolvable from zero"
    assert abs(difference.mean().item()) <= tol, f"pathwise {mean} vs finite difference {finite_difference.mean()}"
    # Power: a gradient off by 1e-6 relative (far less than any missing factor) would be rejected.
    assert abs(mean) * 1e-6 > tol


def test_pathwise_gradient_is_unbiased_against_the_score_function_estimator():
    """E[dz/draw] (the estimator's autograd) vs an independent score-function estimate of dE[z]/draw.

    With ``u_k = log pi_k + g_k`` Gumbel with location ``log pi_k``, the score of ``u`` is
    ``sum_k (1 - exp(-g_k)) d log pi_k / draw``, so ``(z - b) * score`` is unbiased for ``dE[z]/draw``
    for any constant ``b``. ``log pi`` and its derivative come from the float64 reference table.
    """
    num = 400_000
    out, params = relaxed_draws(RAW, num, seed=2)
    (grad,) = torch.autograd.grad(out.sample.sum(), params)
    pathwise = grad.flatten()

    table = out.posterior
    lam = table.rate.flatten()[0].item()
    log_pi = torch.as_tensor(reference_count_log_table("poisson", {"rate": torch.tensor(lam)}, table.window))
    # d log pi_k / d rate in closed form: k / rate - 1 inside (and for pi_0 = P(X = 0)); the folded edge
    # P(X >= n - 1) has derivative P(X = n - 2).
    k = torch.arange(WINDOW, dtype=torch.float64)
    dlog = k / lam - 1.0
    pmf_before_edge = math.exp((WINDOW - 2) * math.log(lam) - lam - math.lgamma(WINDOW - 1))
    dlog[-1] = pmf_before_edge / log_pi[-1].exp()
    dlog = dlog * torch.sigmoid(torch.tensor(RAW, dtype=torch.float64))  # chain rule: d rate / d raw

    generator = torch.Generator().manual_seed(3)
    uniform = torch.rand(num, WINDOW, dtype=torch.float64, generator=generator)
    gumbel = -torch.log(-torch.log(uniform))
    weights = torch.softmax((log_pi + gumbel) / TAU, -1)
    z = weights @ k
    score = (z - lam) * ((1.0 - torch.exp(-gumbel)) @ dlog)

    se = math.hypot(standard_error(pathwise), standard_error(score))
    difference = pathwise.mean().item() - score.mean().item()
    assert abs(score.mean().item()) > 8 * se, "the reference must be resolvable from zero"
    assert abs(difference) <= 4 * se, f"pathwise {pathwise.mean().item()} vs score {score.mean().item()} (SE {se})"
    assert abs(TAU * pathwise.mean().item() - score.mean().item()) > 4 * se


def test_relaxed_mean_approaches_the_table_mean_as_tau_decreases():
    """At tau = 0.01 the relaxed mean is the posterior table mean within 4 SE; at tau = 1 it is not.

    The relaxation gap ``E[z_tau - z_hard]`` is measured with the same noise (the straight-through
    forward value is the exact draw ``argmax`` of the same scores), so its SE is small, and must shrink.
    """
    num = 100_000
    gaps = []
    for tau in (1.0, 0.3, 0.1, 0.01):
        soft, _ = relaxed_draws(RAW, num, seed=4, dtype=torch.float32, tau=tau)
        hard_estimator = GenGSStraightThrough(window=WINDOW, tau=tau)
        hard, _ = relaxed_draws(RAW, num, seed=4, estimator=hard_estimator, dtype=torch.float32)
        z = soft.sample.detach().double().flatten()
        gap = z - hard.sample.detach().flatten()
        gaps.append((gap.mean().item(), standard_error(gap)))
        table_mean = soft.posterior.mean.flatten()[0].item()
        deviation, se = z.mean().item() - table_mean, standard_error(z)
        if tau == 1.0:
            assert abs(deviation) > 4 * se, "tau = 1 should be visibly biased (the check must have power)"
        if tau == 0.01:
            assert abs(deviation) <= 4 * se, f"relaxed mean off the table mean by {deviation} (SE {se})"
    for (gap_a, se_a), (gap_b, se_b) in zip(gaps, gaps[1:], strict=False):
        assert abs(gap_b) <= abs(gap_a) + 4 * math.hypot(se_a, se_b), f"relaxation gaps {gaps}"
    assert abs(gaps[-1][0]) <= 4 * gaps[-1][1]
