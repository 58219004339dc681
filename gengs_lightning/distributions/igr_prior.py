"""The Gaussian prior of an IGR fitted so that its induced categorical matches a prior table.

IGR's KL is between Gaussians in ``y``-space (Potapczynski et al. 2020, Section 3), so the discrete prior
of a model (a count family on a window, a categorical) needs a Gaussian whose induced categorical
(:class:`~gengs_lightning.distributions.igr.IGRCategorical`) approximates it: :func:`fit_igr_prior`
computes one, :func:`cached_igr_prior_fit` fits each table once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.special import log_ndtr

from gengs_lightning.checks import check_choice
from gengs_lightning.distributions.igr import (
    _LOG_SQRT_2PI,
    _PSEUDO_COUNT,
    _SMOOTHING_TAU,
    VARIANTS,
    IGRVariant,
    _composite_rule,
    gaussian_argmax_log_probs,
    stick_breaking,
)

#: ``log`` of the smallest target probability the prior fit tries to reproduce (``1e-30``).
_LOG_TINY = math.log(1e-30)


@dataclass(frozen=True)
class IGRPriorFit:
    """A Gaussian prior in IGR's ``y``-space whose induced categorical approximates a prior table.

    Attributes:
        loc: Means ``(*batch, K - 1)`` (float64, CPU).
        log_scale: Log standard deviations ``(*batch, K - 1)``.
        log_probs: Its induced categorical ``(*batch, K)``: exact (quadrature) for ``method="newton"``, a
            ``2^16``-draw Monte Carlo estimate with a pseudo-count of 1/2 for ``method="monte_carlo"``.
        tv: Total-variation distance between ``exp(log_probs)`` and the table, ``(*batch,)``.
        tv_stderr: Monte Carlo standard error of ``tv`` (zero for the quadrature).
        method: ``"newton"`` (I, Planar) or ``"monte_carlo"`` (SB).
    """

    loc: Tensor
    log_scale: Tensor
    log_probs: Tensor
    tv: Tensor
    tv_stderr: Tensor
    method: str


def _grid_log_probs_and_jacobian(mu: Tensor) -> tuple[Tensor, Tensor]:
    """Unit-scale ``log P(argmax(y, 0) = k)`` and its Jacobian in ``mu`` on one shared quadrature grid.

    With ``a_k = phi(x - mu_k) / Phi(x - mu_k)`` and ``F = prod_j Phi(x - mu_j)``, ``P_k = int_0^inf a_k F dx``,
    ``d log P_k / d mu_j = -E_k[a_j]`` (``j != k``) and ``d log P_k / d mu_k = E_k[x - mu_k]`` under the
    density ``a_k F / P_k``; the last category is ``prod_j Phi(-mu_j)``. Composite Gauss-Legendre with
    panels of width 1/4 (8 nodes) on ``[0, max(mu) + 9]``: cost ``O(K Q)`` and ``O(K^2 Q)`` for the Jacobian.
    """
    width = 0.25
    high = max(float(mu.max()), 0.0) + 9.0
    panels = math.ceil(high / width)
    s, w = _composite_rule(panels, 8)
    x, log_w = s * panels * width, (w * panels * width).log()
    d = x.unsqueeze(-1) - mu  # (Q, m)
    log_cdf = log_ndtr(d)
    log_a = -0.5 * d.square() - _LOG_SQRT_2PI - log_cdf
    terms = log_w.unsqueeze(-1) + log_cdf.sum(-1, keepdim=True) + log_a  # (Q, m)
    log_q = terms.logsumexp(0)
    weights = (terms - log_q).exp()
    jacobian = -(weights.T @ log_a.exp())
    jacobian.diagonal().copy_((weights * d).sum(0))
    log_last = log_ndtr(-mu).sum()
    jacobian_last = -(-0.5 * mu.square() - _LOG_SQRT_2PI - log_ndtr(-mu)).exp()
    return torch.cat([log_q, log_last.unsqueeze(0)]), torch.cat([jacobian, jacobian_last.unsqueeze(0)])


def _fit_unit_scale_loc(log_p: Tensor, iterations: int = 60) -> Tensor:
    """Means ``mu`` with ``P(argmax(N(mu, I), 0) = k) = p_k`` by damped Newton on ``log q(mu) = log p``.

    The map from ``mu`` to the categorical is a bijection onto the open simplex (a Thurstone model), so
    the system has one solution; Newton with the analytic Jacobian (least squares over the ``K`` equations)
    and step halving on the squared log-residual reaches it in a handful of iterations.
    """
    log_p = log_p.clamp_min(_LOG_TINY)
    mu = ((log_p[:-1] - log_p[-1]) / 3.0).clamp(-15.0, 15.0)
    log_q, jacobian = _grid_log_probs_and_jacobian(mu)
    for _ in range(iterations):
        residual = log_p - log_q
        merit = residual.square().sum()
        if residual.abs().max() < 1e-11:
            break
        step = torch.linalg.lstsq(jacobian, residual.unsqueeze(-1)).solution.squeeze(-1).clamp(-3.0, 3.0)
        size = 1.0
        for _ in range(40):
            candidate = (mu + size * step).clamp(-40.0, 40.0)
            log_q_new, jacobian_new = _grid_log_probs_and_jacobian(candidate)
            if (log_p - log_q_new).square().sum() < merit:
                break
            size /= 2.0
        else:
            break
        mu, log_q, jacobian = candidate, log_q_new, jacobian_new
    return mu


def _fit_stick_breaking(
    log_p: Tensor, mc_samples: int, steps: int, seed: int, lr: float = 0.1, bound: float = 2.0
) -> tuple[Tensor, Tensor]:
    """Gaussian ``(mu, log sigma)`` whose SB-induced categorical approximates ``p`` (Monte Carlo, Adam).

    The last category never wins as ``tau -> 0``, so the target is ``p`` conditioned on the first ``K - 1``
    outcomes (a smoothed surrogate that kept the last category would reward shrinking every stick, which
    the limit does not follow). Minimises ``KL(p' || q_soft)`` where ``q_soft`` is the mean of
    ``softmax(eta / 0.02)`` over a fixed set of ``mc_samples`` standard normal draws (common random numbers,
    float32), from the start ``mu = logit(h)`` with the hazard ``h_k = p'_k / P'(X >= k)`` (sticks of mean
    length about ``p'``) and
    ``sigma = 1``; ``|log sigma| <= bound`` keeps the sigmoids away from saturation (a large sigma makes
    ``kappa`` binary: closer to a hazard model, but with vanishing reparameterisation gradients).
    """
    dtype = torch.float32
    # the last category never wins as tau -> 0: fit the table conditioned on the first K - 1 outcomes
    log_p = log_p[..., :-1].to(dtype)
    log_p = (log_p - log_p.logsumexp(-1, keepdim=True)).clamp_min(_LOG_TINY)
    p = log_p.exp()
    m = p.shape[-1]
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(mc_samples, *([1] * (p.dim() - 1)), m, generator=generator, dtype=dtype)
    survival = (1.0 - p.cumsum(-1) + p).clamp_min(1e-12)
    hazard = (p / survival).clamp(1e-4, 1.0 - 1e-4)
    mu = torch.logit(hazard).requires_grad_()
    log_sigma = torch.zeros_like(mu, requires_grad=True)
    optimizer = torch.optim.Adam([mu, log_sigma], lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            optimizer.zero_grad()
            eta = stick_breaking(mu + log_sigma.exp() * noise)
            q = torch.softmax(eta / _SMOOTHING_TAU["SB"], -1).mean(0)
            loss = (p * (log_p - q.clamp_min(1e-30).log())).sum()
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                log_sigma.clamp_(-bound, bound)
    return mu.detach().double(), log_sigma.detach().double()


def fit_igr_prior(
    log_pmf: Tensor,
    variant: IGRVariant = "I",
    *,
    mc_samples: int = 4096,
    steps: int = 150,
    seed: int = 0,
    quadrature_nodes: int = 8,
) -> IGRPriorFit:
    """Fit the Gaussian prior of an IGR to a prior table ``log_pmf`` of shape ``(*batch, K)``.

    * ``I`` and ``Planar`` (whose prior has no flow: the Gaussian lives where ``softmax++`` is applied):
      the categorical induced by ``N(loc, diag scale^2)`` is unchanged when ``loc`` and ``scale`` are scaled
      together, and for a fixed scale the map from ``loc`` to the categorical is a bijection onto the open
      simplex. So ``scale = 1`` (the paper's initialisation ``xi = log sigma = 0``; any other common scale
      only renames the temperature) and ``loc`` solves ``q(loc) = p`` exactly, by Newton's method on the
      quadrature of :func:`gaussian_argmax_log_probs` (shared grid, analytic Jacobian). The remaining
      total variation is at the level of the quadrature error (about ``1e-15`` for the paper's priors).
    * ``SB``: the paper's construction (its ``set_prior.py``) minimises a Monte Carlo loss between the
      mean relaxed sample at a low temperature and the table; here ``KL(table || smoothed estimate)`` over
      fixed draws, by Adam (:func:`_fit_stick_breaking`). The SB categorical is the law of the largest stick
      piece; it gives no mass to the last outcome (``softmax++``'s extra category never wins as
      ``tau -> 0``), so the distance is at least the table's last mass (negligible for count windows, not
      for a categorical prior). The reported distance uses ``2^16`` fresh draws, with its standard error.

    Rows of a batch of tables are fitted independently. Targets below ``1e-30`` are raised to it.

    Returns:
        The fit (float64 tensors on the CPU).
    """
    log_p = log_pmf.detach().double().cpu()
    log_p = log_p - log_p.logsumexp(-1, keepdim=True)
    if log_p.shape[-1] < 2:
        raise ValueError(f"an IGR prior needs a table of at least two categories, got {log_p.shape[-1]}")
    check_choice("IGR variant", variant, VARIANTS)
    p = log_p.exp()
    if variant in ("I", "Planar"):
        rows = log_p.reshape(-1, log_p.shape[-1])
        loc = torch.stack([_fit_unit_scale_loc(row) for row in rows]).reshape(log_p.shape[:-1] + (-1,))
        log_scale = torch.zeros_like(loc)
        log_probs = gaussian_argmax_log_probs(loc, log_scale, quadrature_nodes)
        tv = 0.5 * (log_probs.exp() - p).abs().sum(-1)
        return IGRPriorFit(loc, log_scale, log_probs, tv, torch.zeros_like(tv), "newton")
    loc, log_scale = _fit_stick_breaking(log_p, mc_samples, steps, seed)
    draws = 1 << 16
    generator = torch.Generator().manual_seed(seed + 1)
    noise = torch.randn(draws, *([1] * (p.dim() - 1)), loc.shape[-1], generator=generator, dtype=torch.float64)
    eta = stick_breaking(loc + log_scale.exp() * noise)
    index = torch.cat([eta, torch.zeros_like(eta[..., :1])], -1).argmax(-1)
    one_hot = F.one_hot(index, p.shape[-1]).double()
    q = one_hot.mean(0)
    smoothed = (q * draws + _PSEUDO_COUNT) / (draws + _PSEUDO_COUNT * p.shape[-1])
    tv = 0.5 * (smoothed - p).abs().sum(-1)
    # TV = E[s_X] / 2 - const with s = sign(q - p): its standard error is std(s_X) / (2 sqrt(draws))
    tv_stderr = (one_hot * torch.sign(q - p)).sum(-1).std(0) / (2.0 * math.sqrt(draws))
    return IGRPriorFit(loc, log_scale, smoothed.log(), tv, tv_stderr, "monte_carlo")


#: Fitted priors by (kind, settings, table): a prior is a constant, so each table is fitted once.
_PRIOR_FITS: dict[tuple, IGRPriorFit] = {}


def cached_igr_prior_fit(
    log_pmf: Tensor, variant: IGRVariant, *, mc_samples: int, seed: int, quadrature_nodes: int
) -> IGRPriorFit:
    """:func:`fit_igr_prior` of ``log_pmf`` (float64, CPU), memoised on the settings and the table's values."""
    key = (variant, seed, mc_samples, quadrature_nodes, tuple(log_pmf.shape), tuple(log_pmf.flatten().tolist()))
    fit = _PRIOR_FITS.get(key)
    if fit is None:
        fit = _PRIOR_FITS[key] = fit_igr_prior(
            log_pmf, variant, mc_samples=mc_samples, seed=seed, quadrature_nodes=quadrature_nodes
        )
    return fit
