"""Shared helpers of the statistical tests of ``gengs_lightning.distributions``.

Everything here is deterministic: brute-force references computed from ``torch.distributions`` and
the statistics (standard errors, chi-square) that the stochastic tests derive their tolerances from.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

#: Machine epsilons.
EPS64 = torch.finfo(torch.float64).eps
EPS32 = torch.finfo(torch.float32).eps
#: Significance level of every chi-square goodness-of-fit test.
ALPHA = 1e-3
#: Number of standard errors a Monte Carlo estimate may deviate from the truth.
Z_SE = 4.0


def chi2_critical(df: int, alpha: float = ALPHA) -> float:
    """Upper ``alpha`` quantile of the chi-square distribution with ``df`` degrees of freedom."""
    try:
        from scipy.stats import chi2
    except ImportError:  # Wilson-Hilferty: accurate to a few parts in 1e3 for df >= 3
        z = _normal_quantile(1.0 - alpha)
        h = 2.0 / (9.0 * df)
        return df * (1.0 - h + z * math.sqrt(h)) ** 3
    return float(chi2.ppf(1.0 - alpha, df))


def _normal_quantile(p: float) -> float:
    """Standard normal quantile by bisection on ``erf`` (only for the scipy-less fallback)."""
    lo, hi = -40.0, 40.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if 0.5 * (1.0 + math.erf(mid / math.sqrt(2.0))) < p:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def chi_square(counts: Tensor, probs: Tensor, min_expected: float = 5.0) -> tuple[float, int]:
    """Pearson's statistic of ``counts`` against ``probs`` and its degrees of freedom.

    Cells whose expected count is below ``min_expected`` are pooled into one cell (and that cell is
    dropped if it is still too small), so that the chi-square approximation holds.
    """
    counts = counts.double().flatten()
    probs = probs.double().flatten()
    total = counts.sum()
    expected = probs * total
    big = expected >= min_expected
    obs = counts[big]
    exp = expected[big]
    if (~big).any():
        pooled_obs, pooled_exp = counts[~big].sum(), expected[~big].sum()
        if pooled_exp >= min_expected:
            obs = torch.cat([obs, pooled_obs[None]])
            exp = torch.cat([exp, pooled_exp[None]])
    # keep the statistic consistent if a pooled cell was dropped: renormalise to the kept cells
    exp = exp * (obs.sum() / exp.sum())
    stat = float(((obs - exp) ** 2 / exp).sum())
    return stat, int(obs.numel()) - 1


def mean_se(x: Tensor) -> tuple[Tensor, Tensor]:
    """Sample mean and its standard error."""
    n = x.shape[0]
    return x.mean(0), x.std(0) / math.sqrt(n)


def variance_se(x: Tensor) -> tuple[Tensor, Tensor]:
    """Sample variance and its standard error ``sqrt((m4 - var^2) / N)``."""
    n = x.shape[0]
    centred = x - x.mean(0)
    var = centred.square().mean(0)
    m4 = centred.pow(4).mean(0)
    return var, ((m4 - var.square()).clamp_min(0.0) / n).sqrt()


def brute_fold(log_prob_on_grid: Tensor, low: int, high: int) -> tuple[Tensor, Tensor]:
    """Fold an untruncated log-PMF given on ``0 .. M`` onto ``[low, high]`` by direct summation.

    Returns the folded PMF (``pi_low = P(X <= low)``, ``pi_high = P(X >= high)``, summed term by term,
    never as a complement) and the tail mass ``P(X < low) + P(X > high)``.
    """
    lp = log_prob_on_grid
    head = lp[..., : low + 1].logsumexp(-1, keepdim=True)
    tail = lp[..., high:].logsumexp(-1, keepdim=True)
    folded = torch.cat([head, lp[..., low + 1 : high], tail], dim=-1).exp()
    below = lp[..., :low].logsumexp(-1).exp() if low > 0 else torch.zeros_like(lp[..., 0])
    above = lp[..., high + 1 :].logsumexp(-1).exp()
    return folded, below + above


def log_scale(family, params: dict, high: int) -> float:
    """Largest magnitude of the terms ``eta k``, ``A`` and ``h_k`` of the table on ``0 .. high``.

    A float64 log-PMF computed as ``eta k + h_k - A`` carries an absolute rounding error of a few
    ulps of this scale, which becomes a relative error of the same size in probability space.
    """
    p64 = {k: (v.double() if torch.is_tensor(v) else v) for k, v in params.items()}
    eta, log_norm, _ = family.natural(**p64)
    k = torch.arange(high + 1, dtype=torch.float64)
    grid_params = {n: (v.unsqueeze(-1) if torch.is_tensor(v) and v.dim() > 0 else v) for n, v in p64.items()}
    h = family.base_measure(k, **grid_params)
    eta_k = (eta.unsqueeze(-1) if eta.dim() else eta) * k
    return float(torch.stack([eta_k.abs().max(), log_norm.abs().max(), h.abs().max()]).max()) + 1.0
