"""Relaxation baselines behind the estimator interface: Gumbel-Softmax and Invertible Gaussian Reparameterization.

Both relax a categorical choice over the outcome table of the prior truncated on a window (the same
table as :class:`~gengs_lightning.estimators.GenGSImplicit`) and hand the model *values*: the relaxed
one-hot ``w`` over the table's ``K`` categories is mapped to ``z = sum_k w_k c_k`` with the table's
outcomes ``c`` (counts, one-hot vectors or count vectors), exactly as GenGS does. In eval mode both draw
exact discrete values.

* :class:`GumbelSoftmax` is the plain Gumbel-Softmax of Jang et al. (2017) / Maddison et al. (2017) as
  practitioners use it (``torch.nn.functional.gumbel_softmax`` and autograd), the reference point of the
  comparison.
* :class:`IGR` is the Invertible Gaussian Reparameterization of Potapczynski, Loaiza-Ganem and Cunningham
  (NeurIPS 2020) with its variants ``I``, ``SB`` (stick-breaking) and ``Planar`` (planar flows), a
  Gaussian prior fitted so that its induced categorical matches the truncated prior table, and the
  closed-form Gaussian KL.

The module also exposes the maths the estimators are built from (``softmax_pp``, its inverse, stick
breaking and its truncation, planar flows and their inverse, the Gaussian KL, the categorical that an IGR
induces as ``tau -> 0`` and the prior fit), so that each piece can be checked on its own.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import Distribution, kl_divergence
from torch.special import log_ndtr

from gengs_lightning.distributions import DiscreteFamily, Prior, TruncatedDiscrete, Window
from gengs_lightning.estimators.base import (
    Estimator,
    EstimatorOutput,
    Objective,
    WindowArg,
    check_window,
    truncation_stats,
)

#: The IGR variants: identity, stick-breaking and planar flows before ``softmax++``.
IGRVariant = Literal["I", "SB", "Planar"]
VARIANTS: tuple[str, ...] = get_args(IGRVariant)

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
#: ``log`` of the smallest target probability the prior fit tries to reproduce (``1e-30``).
_LOG_TINY = math.log(1e-30)
#: Temperature of the smooth surrogate whose gradient the Monte Carlo tables carry (see ``IGRCategorical``).
_SMOOTHING_TAU = {"SB": 0.02, "Planar": 0.1}
#: Pseudo-count added to every category of a Monte Carlo table (Krichevsky-Trofimov).
_PSEUDO_COUNT = 0.5
#: Elements of the largest intermediate tensor of the quadrature and Monte Carlo tables.
_CHUNK_ELEMENTS = 1 << 22


def _check_int(name: str, value: int, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _check_open_unit(name: str, value: float, meaning: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0.0 < value < 1.0):
        raise ValueError(f"{name} is {meaning} and must be a number in (0, 1), got {value!r}")
    return float(value)


def _check_positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0.0 < value < math.inf):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def _window_table(prior: Prior, window: Window | None) -> DiscreteFamily:
    """The prior as a table on the estimator's window (the whole table for categorical and multinomial)."""
    return prior.truncated(prior.resolve_window(window))


# ==================================================================================================
# softmax++, stick breaking, planar flows, Gaussian KL
# ==================================================================================================


def softmax_pp(x: Tensor, tau: Tensor | float, delta: float = 1.0) -> Tensor:
    """IGR's invertible ``softmax++``: ``R^(K-1) -> `` interior of the ``K``-simplex.

    ``softmax++(x / tau)_k = exp(x_k / tau) / (sum_j exp(x_j / tau) + delta)`` for ``k < K`` and the
    remainder ``delta / (sum_j exp(x_j / tau) + delta)`` for the last category; computed as a softmax over
    ``(x / tau, log delta)``, which is the same number without overflow.

    Args:
        x: Points of shape ``(..., K - 1)``.
        tau: Positive temperature (float or tensor broadcastable to ``(...)`` with a trailing 1).
        delta: Positive constant of ``softmax++`` (the paper's ``delta``).

    Returns:
        Relaxed one-hot vectors of shape ``(..., K)``.
    """
    tau = torch.as_tensor(tau, dtype=x.dtype, device=x.device)
    last = torch.full_like(x[..., :1], math.log(delta))
    return torch.softmax(torch.cat([x / tau, last], -1), -1)


def softmax_pp_inverse(z: Tensor, tau: Tensor | float, delta: float = 1.0) -> Tensor:
    """Inverse of :func:`softmax_pp`: ``x_k = tau (log z_k - log z_K + log delta)``, ``(..., K) -> (..., K - 1)``."""
    tau = torch.as_tensor(tau, dtype=z.dtype, device=z.device)
    log_z = z.log()
    return tau * (log_z[..., :-1] - log_z[..., -1:] + math.log(delta))


def stick_breaking(y: Tensor) -> Tensor:
    """Stick pieces ``eta_k = kappa_k prod_{j<k} (1 - kappa_j)`` with fractions ``kappa = sigmoid(y)``.

    Computed in log space (``log sigmoid``), so that long sticks neither underflow nor lose precision.
    The pieces are positive and sum to ``1 - prod_k (1 - kappa_k) < 1``.

    Args:
        y: Gaussian points ``(..., m)``.

    Returns:
        The ``m`` pieces ``eta``, shape ``(..., m)``.
    """
    log_rest = F.logsigmoid(-y).cumsum(-1)
    log_before = torch.cat([torch.zeros_like(log_rest[..., :1]), log_rest[..., :-1]], -1)
    return (F.logsigmoid(y) + log_before).exp()


def stick_breaking_remaining(y: Tensor) -> Tensor:
    """Log of the stick left after ``k = 1..m`` pieces: ``log prod_{j<=k} (1 - sigmoid(y_j))``, ``(..., m)``."""
    return F.logsigmoid(-y).cumsum(-1)


def stick_breaking_truncation(y: Tensor, threshold: float) -> int:
    """Number of sticks ``n`` that IGR-SB keeps for a batch of Gaussian points ``y`` of shape ``(..., m)``.

    Each point needs the smallest ``n`` whose remaining stick ``prod_{j<=n} (1 - kappa_j)`` is below
    ``threshold``; the batch keeps the largest such ``n`` (so that every point meets the threshold), capped
    at the ``m`` sticks of the window. IGR's countably infinite support is thereby truncated per batch.
    """
    log_remaining = stick_breaking_remaining(y.detach())
    needed = (log_remaining >= math.log(threshold)).sum(-1) + 1
    return int(min(int(needed.max()), y.shape[-1]))


def planar_flow(y: Tensor, u: Tensor, w: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """One planar flow ``f(y) = y + u_hat tanh(w . y + b)`` (Rezende and Mohamed 2015) and its log-determinant.

    Invertibility needs ``w . u_hat >= -1``; as in Rezende and Mohamed (Appendix A.1) the free ``u`` is
    mapped to ``u_hat = u + (m(w . u) - w . u) w / |w|^2`` with ``m(a) = -1 + softplus(a)``, so that
    ``w . u_hat = m(w . u) > -1``. The Jacobian determinant is ``1 + (1 - tanh^2(w . y + b)) w . u_hat > 0``.

    Args:
        y: Points ``(..., m)``.
        u: Free direction ``(..., m)`` (constrained here).
        w: Normal of the hyperplane ``(..., m)``.
        b: Offset ``(...)``.

    Returns:
        ``f(y)`` of shape ``(..., m)`` and ``log |det df/dy|`` of shape ``(...)``.
    """
    u_hat, wu_hat = _constrained_u(u, w)
    h = torch.tanh((w * y).sum(-1) + b)
    x = y + u_hat * h.unsqueeze(-1)
    log_det = torch.log1p((1.0 - h.square()) * wu_hat)
    return x, log_det


def _constrained_u(u: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    """``u_hat`` with ``w . u_hat = -1 + softplus(w . u) > -1``, and that product."""
    wu = (w * u).sum(-1, keepdim=True)
    target = F.softplus(wu) - 1.0
    norm = (w * w).sum(-1, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)
    return u + (target - wu) * w / norm, target.squeeze(-1)


def planar_flow_inverse(x: Tensor, u: Tensor, w: Tensor, b: Tensor, iterations: int = 200) -> Tensor:
    """Invert :func:`planar_flow`: the ``y`` with ``f(y) = x``.

    With ``alpha = w . y + b`` and ``c = w . u_hat > -1``, ``w . x + b = alpha + c tanh(alpha)`` is strictly
    increasing in ``alpha`` and ``alpha`` lies within ``|c|`` of ``w . x + b``, so bisection finds it; then
    ``y = x - u_hat tanh(alpha)``. (Used to check invertibility; the estimator never needs the inverse.)
    """
    u_hat, c = _constrained_u(u, w)
    target = (w * x).sum(-1) + b
    low, high = target - c.abs(), target + c.abs()
    for _ in range(iterations):
        mid = (low + high) / 2
        above = mid + c * torch.tanh(mid) > target
        high = torch.where(above, mid, high)
        low = torch.where(above, low, mid)
    alpha = (low + high) / 2
    return x - u_hat * torch.tanh(alpha).unsqueeze(-1)


def apply_planar_flows(y: Tensor, flows: tuple[Tensor, Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """Compose planar flows ``(u, w, b)`` of shapes ``(..., F, m)``, ``(..., F, m)``, ``(..., F)`` on ``y``.

    Returns the transformed points and the summed log-determinants ``(...)``.
    """
    u, w, b = flows
    log_det = y.new_zeros(())
    for f in range(u.shape[-2]):
        y, step = planar_flow(y, u[..., f, :], w[..., f, :], b[..., f])
        log_det = log_det + step
    return y, log_det


def gaussian_kl(loc_q: Tensor, log_scale_q: Tensor, loc_p: Tensor, log_scale_p: Tensor) -> Tensor:
    """Closed-form ``KL(N(loc_q, diag scale_q^2) || N(loc_p, diag scale_p^2))``, summed over the last dimension.

    ``sum_k log(s_p / s_q) + (s_q^2 + (m_q - m_p)^2) / (2 s_p^2) - 1/2``.
    """
    ratio = (log_scale_q - log_scale_p).exp()
    gap = (loc_q - loc_p) / log_scale_p.exp()
    return (0.5 * (ratio.square() + gap.square()) - 0.5 - (log_scale_q - log_scale_p)).sum(-1)


# ==================================================================================================
# The categorical an IGR induces as tau -> 0
# ==================================================================================================


@lru_cache(maxsize=16)
def _gauss_legendre(nodes: int) -> tuple[Tensor, Tensor]:
    """Gauss-Legendre nodes and weights on ``[0, 1]`` (Golub-Welsch, float64)."""
    k = torch.arange(1, nodes, dtype=torch.float64)
    beta = k / torch.sqrt(4.0 * k * k - 1.0)
    jacobi = torch.diag(beta, 1) + torch.diag(beta, -1)
    x, vectors = torch.linalg.eigh(jacobi)
    return (x + 1.0) / 2.0, vectors[0].square()


@lru_cache(maxsize=16)
def _composite_rule(panels: int, nodes: int) -> tuple[Tensor, Tensor]:
    """A composite Gauss-Legendre rule on ``[0, 1]``: ``panels`` panels of ``nodes`` nodes."""
    x, w = _gauss_legendre(nodes)
    starts = torch.arange(panels, dtype=torch.float64).unsqueeze(-1)
    return ((starts + x) / panels).reshape(-1), (w / panels).repeat(panels)


#: Breakpoints of the quadrature around each Gaussian, in standard deviations.
_BREAKPOINTS = (-8.0, -4.0, -2.0, -1.0, 0.0, 1.0, 2.0, 4.0, 8.0)
#: Uniform panels added to the breakpoints on ``[0, upper]``.
_BACKGROUND_PANELS = 16


def gaussian_argmax_log_probs(loc: Tensor, log_scale: Tensor, quadrature_nodes: int = 8) -> Tensor:
    """``log P(argmax(y_1, ..., y_m, 0) = k)`` for independent ``y_k ~ N(loc_k, scale_k^2)``: IGR-I as ``tau -> 0``.

    As ``tau -> 0``, ``softmax++(y / tau)`` tends to the one-hot of ``argmax(y, 0)`` (the last category's
    score is ``log delta`` while the others grow as ``1 / tau``), so this is the categorical that IGR-I
    (and any IGR whose last transformation is the identity) relaxes. With ``F(x) = prod_j Phi_j(x)`` the
    law of ``max_j y_j``, category ``k < K`` has ``P_k = int_0^inf phi_k(x) F(x) / Phi_k(x) dx`` and the last
    one ``prod_j Phi(-mu_j / s_j)`` (closed form). The integral is composite Gauss-Legendre on one grid
    shared by all ``k``, with panel breakpoints at ``mu_j + {0, +-1, +-2, +-4, +-8} s_j`` for every ``j`` (so
    that every normal density and every step of ``F``, however narrow, is resolved) and 16 uniform panels
    on ``[0, max_j (mu_j + 9 s_j) + min_j s_j]``, in log space (``log_ndtr``), float64, differentiable in
    ``loc`` and ``log_scale``, returned in their dtype. Cost ``O(K^2)`` per row; the total variation to a
    refined rule is about ``1e-11`` even for standard deviations four orders of magnitude apart.

    Args:
        loc: Means ``(..., m)``.
        log_scale: Log standard deviations ``(..., m)``.
        quadrature_nodes: Gauss-Legendre nodes per panel.

    Returns:
        Log-probabilities ``(..., m + 1)``.
    """
    dtype = loc.dtype
    loc, log_scale = torch.broadcast_tensors(loc.double(), log_scale.double())
    batch, m = loc.shape[:-1], loc.shape[-1]
    flat_loc, flat_log_scale = loc.reshape(-1, m), log_scale.reshape(-1, m)
    nodes = (len(_BREAKPOINTS) * m + _BACKGROUND_PANELS) * quadrature_nodes
    chunk = max(1, _CHUNK_ELEMENTS // (nodes * m))
    rows = [
        _argmax_log_probs_rows(flat_loc[i : i + chunk], flat_log_scale[i : i + chunk], quadrature_nodes)
        for i in range(0, flat_loc.shape[0], chunk)
    ]
    return torch.cat(rows).reshape(batch + (m + 1,)).to(dtype)


def _argmax_log_probs_rows(mu: Tensor, log_sigma: Tensor, quadrature_nodes: int) -> Tensor:
    """:func:`gaussian_argmax_log_probs` on rows ``(r, m)`` (float64)."""
    sigma = log_sigma.exp()
    offsets = torch.tensor(_BREAKPOINTS, dtype=mu.dtype, device=mu.device)
    breakpoints = (mu.unsqueeze(-1) + sigma.unsqueeze(-1) * offsets).flatten(1)
    upper = (mu + 9.0 * sigma).amax(-1, keepdim=True).clamp_min(0.0) + sigma.amin(-1, keepdim=True)
    uniform = upper * torch.linspace(0.0, 1.0, _BACKGROUND_PANELS + 1, dtype=mu.dtype, device=mu.device)
    breakpoints = torch.cat([torch.minimum(breakpoints.clamp_min(0.0), upper), uniform], -1).sort(-1).values
    s, w = (v.to(mu.device) for v in _gauss_legendre(quadrature_nodes))
    low = breakpoints[:, :-1]
    width = (breakpoints[:, 1:] - low).clamp_min(torch.finfo(mu.dtype).tiny)  # empty panels weigh nothing
    x = (low.unsqueeze(-1) + width.unsqueeze(-1) * s).flatten(1)  # (r, Q)
    log_w = (width.log().unsqueeze(-1) + w.log()).flatten(1)
    d = (x.unsqueeze(-1) - mu.unsqueeze(-2)) / sigma.unsqueeze(-2)  # (r, Q, m)
    log_cdf = log_ndtr(d)
    log_pdf = -0.5 * d.square() - log_sigma.unsqueeze(-2) - _LOG_SQRT_2PI
    terms = (log_w + log_cdf.sum(-1)).unsqueeze(-1) + log_pdf - log_cdf
    log_last = log_ndtr(-mu / sigma).sum(-1, keepdim=True)
    return torch.cat([terms.logsumexp(-2), log_last], -1)


def _monte_carlo_log_probs(
    loc: Tensor,
    log_scale: Tensor,
    transform: Callable[[Tensor], Tensor],
    num_samples: int,
    seed: int,
    smoothing_tau: float,
) -> Tensor:
    """Fixed-seed Monte Carlo estimate of ``P(argmax(transform(y), 0) = k)``, ``y ~ N(loc, scale^2)``.

    The value is the histogram of ``num_samples`` draws (the same standard normal draws for every batch
    entry and every call) with a pseudo-count of 1/2 per category, so that no category has probability
    zero; its gradient is that of the mean of ``softmax((transform(y) / smoothing_tau, 0))`` over the same
    draws (a straight-through estimate: the histogram is piecewise constant in the parameters).
    """
    m = loc.shape[-1]
    batch = torch.broadcast_shapes(loc.shape[:-1], log_scale.shape[:-1])
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(num_samples, m, generator=generator, dtype=torch.float64).to(loc)
    noise = noise.reshape((num_samples,) + (1,) * len(batch) + (m,))
    counts = loc.new_zeros(batch + (m + 1,))
    soft = loc.new_zeros(())
    chunk = max(1, _CHUNK_ELEMENTS // max(1, batch.numel() * (m + 1)))
    scale = log_scale.exp()
    for start in range(0, num_samples, chunk):
        x = transform(loc + scale * noise[start : start + chunk])
        scores = torch.cat([x, torch.zeros_like(x[..., :1])], -1)
        with torch.no_grad():
            counts = counts + F.one_hot(scores.argmax(-1), m + 1).sum(0).to(counts)
        soft = soft + torch.softmax(scores / smoothing_tau, -1).sum(0)
    soft = soft / num_samples
    hard = (counts + _PSEUDO_COUNT) / (num_samples + _PSEUDO_COUNT * (m + 1))
    return (hard + (soft - soft.detach())).log()


class IGRCategorical(TruncatedDiscrete):
    """The categorical that an IGR induces on the window's outcomes as ``tau -> 0``: the discrete ``q(z | x)``.

    A Gaussian ``y ~ N(loc, diag scale^2)`` in ``R^(K-1)``, transformed by the variant (identity, stick
    breaking, planar flows) into ``x``, picks category ``argmax(x, 0)`` (the ``tau -> 0`` limit of
    ``softmax++(x / tau)``); the table ``pi`` is the law of that category, over the outcomes ``c`` of the
    prior's truncated table. What ``log_pmf`` (and hence ``log_prob`` and ``sample``) holds:

    * ``I``: exact up to quadrature error (:func:`gaussian_argmax_log_probs`), differentiable.
    * ``SB`` (``argmax`` of the stick pieces) and ``Planar`` (``argmax`` of the flowed point): no closed
      form; a fixed-seed Monte Carlo estimate with ``mc_samples`` draws and a pseudo-count of 1/2 per
      category (standard error about ``sqrt(pi_k / mc_samples)``); its gradient is that of a smoothed
      estimate (``softmax`` at temperature 0.02 for SB, 0.1 for Planar), so ``pmf`` is usable in
      differentiable expectations but is only an estimate of the induced categorical.

    :meth:`sample` draws exactly from this table (Gumbel-Max), so ``sample`` and ``log_prob`` are
    consistent and importance-weighted bounds that use them as proposal stay valid bounds; for SB and
    Planar the table is an estimate of the IGR's discrete limit, not the limit itself (the estimators' own
    eval-mode samples come from the Gaussian directly). The table is computed on first use and kept.

    Args:
        loc: Gaussian means ``(*batch, K - 1)``.
        log_scale: Gaussian log standard deviations ``(*batch, K - 1)``.
        outcomes: The table's outcomes ``(K,)`` or ``(K, event)``.
        window: The window the outcomes enumerate (count families).
        variant: ``"I"``, ``"SB"`` or ``"Planar"``.
        flows: Planar flow parameters ``(u, w, b)`` (``Planar`` only).
        log_pmf: A precomputed table (e.g. of a fitted prior); skips the computation.
        mc_samples: Monte Carlo draws for SB and Planar.
        quadrature_nodes: Gauss-Legendre nodes per quadrature panel for I.
        seed: Seed of the Monte Carlo draws.
        tail_mass: Mass of the underlying family outside the window, if any.
    """

    def __init__(
        self,
        loc: Tensor,
        log_scale: Tensor,
        outcomes: Tensor,
        window: Window | None = None,
        *,
        variant: IGRVariant = "I",
        flows: tuple[Tensor, Tensor, Tensor] | None = None,
        log_pmf: Tensor | None = None,
        mc_samples: int = 4096,
        quadrature_nodes: int = 8,
        seed: int = 0,
        tail_mass: Tensor | None = None,
    ):
        if variant not in VARIANTS:
            raise ValueError(f"unknown IGR variant {variant!r}; accepted: {', '.join(VARIANTS)}")
        if loc.shape[-1] + 1 != outcomes.shape[0]:
            raise ValueError(
                f"{loc.shape[-1]} Gaussian dimensions need {loc.shape[-1] + 1} outcomes, got {outcomes.shape[0]}"
            )
        self.loc, self.log_scale, self.flows, self.variant = loc, log_scale, flows, variant
        self.mc_samples, self.quadrature_nodes, self.seed = mc_samples, quadrature_nodes, seed
        self.outcomes, self.window, self._tail_mass = outcomes, window, tail_mass
        self._tables: dict[bool, Tensor] = {}
        if log_pmf is not None:
            self._tables[True] = log_pmf
        batch = torch.broadcast_shapes(loc.shape[:-1], log_scale.shape[:-1])
        Distribution.__init__(self, batch, outcomes.shape[1:], validate_args=False)

    @property
    def log_pmf(self) -> Tensor:
        """``log pi`` of the induced categorical, ``(*batch, K)``, computed on first use (see the class)."""
        grad = torch.is_grad_enabled()
        table = self._tables.get(True, self._tables.get(grad))
        if table is None:
            table = self._tables[grad] = self._compute()
        return table

    @property
    def pmf(self) -> Tensor:
        return self.log_pmf.exp()

    def _compute(self) -> Tensor:
        if self.variant == "I":
            return gaussian_argmax_log_probs(self.loc, self.log_scale, self.quadrature_nodes)
        if self.variant == "SB":
            transform = stick_breaking
        else:
            flows = self.flows

            def transform(y: Tensor) -> Tensor:
                return apply_planar_flows(y, flows)[0]

        return _monte_carlo_log_probs(
            self.loc, self.log_scale, transform, self.mc_samples, self.seed, _SMOOTHING_TAU[self.variant]
        )


# ==================================================================================================
# Fitting the Gaussian prior
# ==================================================================================================


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
    p = log_p.exp()
    if variant in ("I", "Planar"):
        rows = log_p.reshape(-1, log_p.shape[-1])
        loc = torch.stack([_fit_unit_scale_loc(row) for row in rows]).reshape(log_p.shape[:-1] + (-1,))
        log_scale = torch.zeros_like(loc)
        log_probs = gaussian_argmax_log_probs(loc, log_scale, quadrature_nodes)
        tv = 0.5 * (log_probs.exp() - p).abs().sum(-1)
        return IGRPriorFit(loc, log_scale, log_probs, tv, torch.zeros_like(tv), "newton")
    if variant != "SB":
        raise ValueError(f"unknown IGR variant {variant!r}; accepted: {', '.join(VARIANTS)}")
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


#: Fitted priors by (kind, settings, table): the prior is a constant, so each table is fitted once.
_PRIOR_FITS: dict[tuple, IGRPriorFit] = {}


# ==================================================================================================
# The estimators
# ==================================================================================================


class GumbelSoftmax(Estimator):
    """The plain Gumbel-Softmax (Jang et al. 2017; Maddison et al. 2017) over the window's outcome table.

    The encoder outputs the ``n`` logits of a free categorical over the outcomes ``c`` of the prior
    truncated on the window (``n`` = window size, or the number of outcomes of a categorical or
    multinomial table). Training samples are ``torch.nn.functional.gumbel_softmax(logits, tau)`` mapped to
    values ``z = sum_k w_k c_k``; for a categorical prior with one-hot outcomes ``z = w`` is exactly the
    Gumbel-Softmax / Concrete relaxation. With ``hard=True`` (straight-through) the forward value is the
    outcome at ``argmax w`` and the gradient that of the relaxed value, as ``gumbel_softmax(hard=True) @ c``
    (which equals ``c[argmax]`` only up to one rounding; here the outcome is returned exactly). In eval
    mode samples are exact draws of the categorical. The KL is the closed-form categorical KL between the
    posterior and the prior truncated on the same window (journal Proposition 6), as for GenGS.

    This is :class:`~gengs_lightning.estimators.GenGSImplicit` up to implementation: the same table, the
    same relaxed distribution and the same KL, but torch's reference relaxation (its own Gumbel noise,
    softmax and autograd) instead of GenGS's noise and closed-form backward pass. It is the reference point
    of the comparison.

    Args:
        window: Truncation level ``n`` or window ``[a, b]``; ``None`` takes the whole support of finite
            families and otherwise the smallest window holding ``1 - 1e-6`` of the prior.
        num_samples: Latent samples per example.
        tau: Initial temperature.
        hard: Straight-through: discrete forward values, relaxed gradients.

    Raises:
        ValueError: For an invalid window, temperature, number of samples or a non-boolean ``hard``.
    """

    def __init__(self, window: WindowArg = None, num_samples: int = 1, tau: float = 1.0, hard: bool = False):
        super().__init__(num_samples=num_samples, tau=tau)
        if not isinstance(hard, bool):
            raise ValueError(f"hard must be True or False, got {hard!r}")
        self.window = check_window(window)
        self.hard = hard

    def raw_size(self, prior: Prior) -> int:
        return _window_table(prior, self.window).num_outcomes

    def posterior(self, params: Tensor, prior: Prior) -> TruncatedDiscrete:
        """The categorical over the window's outcomes with the encoder's logits."""
        table = _window_table(prior, self.window)
        return TruncatedDiscrete(params, table.outcomes.to(params), table.window)

    def prior_distribution(self, posterior: TruncatedDiscrete, prior: Prior) -> DiscreteFamily:
        """The prior truncated on the window: what the categorical KL compares against."""
        return _window_table(prior, self.window)

    def raw_like(self, prior: Prior) -> Tensor:
        return _window_table(prior, self.window).log_pmf

    def forward(self, params: Tensor, objective: Objective, prior: Prior, kl: bool = True) -> EstimatorOutput:
        self.check_params(params, prior)
        table = _window_table(prior, self.window)
        outcomes = table.outcomes.to(params)
        posterior = TruncatedDiscrete(params, outcomes, table.window)
        if self.training:
            logits = params.expand((self.num_samples,) + params.shape)
            weights = F.gumbel_softmax(logits, tau=self.tau, hard=False, dim=-1)
            soft = weights @ outcomes
            sample = outcomes[weights.argmax(-1)] + (soft - soft.detach()) if self.hard else soft
        else:
            sample = posterior.sample((self.num_samples,))
        value = self.check_objective(objective(sample), params.shape[0])
        kl_term = kl_divergence(posterior, table).sum(-1) if kl else value.new_zeros(params.shape[0])
        loss = value.mean(0) + kl_term
        stats = truncation_stats(posterior, prior, tail_mass=table.tail_mass)
        return EstimatorOutput(sample, value, kl_term, loss, loss.mean(), posterior, stats)

    def extra_repr(self) -> str:
        return f"window={self.window}, hard={self.hard}, {super().extra_repr()}"


class IGR(Estimator):
    """Invertible Gaussian Reparameterization (Potapczynski, Loaiza-Ganem and Cunningham, NeurIPS 2020).

    Per latent dimension the encoder outputs the mean and log standard deviation of a Gaussian ``y`` in
    ``R^(K-1)``, ``K`` being the number of outcomes of the prior's table on the window (raw layout
    ``[mu (K-1), log sigma (K-1), flows]``). A training sample ``y = mu + sigma eps`` goes through the
    variant's invertible map ``h`` and ``softmax++(h(y) / tau)`` (:func:`softmax_pp`, ``delta`` = 1 by
    default as in the paper's text; the authors' code uses 0.1) to a relaxed one-hot ``w``, mapped to the
    value ``z = sum_k w_k c_k`` with the table's outcomes. Variants:

    * ``I``: ``h`` is the identity.
    * ``SB``: the paper's stick breaking (its code, ``IGR_SB``): fractions ``kappa = sigmoid(y)``, pieces
      ``eta_k = kappa_k prod_{j<k} (1 - kappa_j)`` and ``w = softmax++(eta / tau)``. The countably infinite
      support is truncated per batch: the batch keeps the first ``n`` sticks, the smallest ``n`` for which
      every sample's remaining stick is below ``threshold`` (the code keeps a quantile of the samples;
      here all of them), capped at the ``K - 1`` sticks of the window. ``w`` then has ``n + 1`` categories
      (the last, ``softmax++``'s extra one) over the first ``n + 1`` outcomes. As ``tau -> 0`` the category
      is that of the largest piece, never the extra one; since ``eta`` lies in ``(0, 1)`` the relaxation
      is soft unless ``tau`` is small (the authors fit priors at ``tau = 0.01``).
    * ``Planar``: ``num_flows`` planar flows (:func:`planar_flow`, with the invertibility constraint on
      ``u``) before ``softmax++``. Their parameters ``(u, w, b)`` come from the encoder (amortised, as in
      Rezende and Mohamed 2015; the IGR code keeps one global flow instead): ``num_flows (2 (K-1) + 1)``
      extra outputs. :meth:`raw_like` gives identity flows (``u_hat = 0``).

    KL: ``I`` and ``SB`` use the closed-form Gaussian KL between ``N(mu, sigma^2)`` and the fitted
    Gaussian prior in ``y``-space (the map from ``y`` to the relaxed sample is invertible and shared by
    posterior and prior, so it equals the KL of the relaxed variables; for SB it is the KL of the
    untruncated sticks, an upper bound on that of the truncated ones). ``Planar``'s prior is the fitted
    Gaussian on the flowed space (no flow: its induced categorical is the fitted one), so the KL has no
    closed form; it is the Monte Carlo estimate ``mean_S [log N(y; mu, sigma) - log |det J_f(y)| -
    log N(f(y); prior)]`` at the training samples (unbiased, may be negative for one sample).

    The prior: for every window's table (per prior dimension) a Gaussian ``N(mu0, diag sigma0^2)`` is
    fitted on first use (:func:`fit_igr_prior`; exact Newton solve with ``sigma0 = 1`` for I and Planar,
    Monte Carlo fit for SB) and cached; :meth:`fitted_prior` returns it with its total-variation distance
    to the table. :meth:`raw_like` returns the fitted prior's parameters, so a model initialised with it
    starts at the prior.

    Eval mode: the exact ``tau -> 0`` sample, the outcome of ``argmax(h(y), 0)`` for a Gaussian draw
    ``y`` (SB: the largest of all ``K - 1`` pieces). :meth:`posterior` returns :class:`IGRCategorical`,
    the law of that category (exact for I; a fixed-seed Monte Carlo estimate for SB and Planar, see
    there), used for ``log_prob`` (importance weights) and expectations; :meth:`prior_distribution` the
    fitted prior's induced categorical. Logged: ``trunc_n`` (categories of the relaxation; SB's ``n + 1``),
    ``trunc_tail_mass`` (the prior's mass outside the window) and, for SB, ``sb_remaining_mass``.

    Args:
        variant: ``"I"``, ``"SB"`` or ``"Planar"``.
        window: Truncation level ``n`` or window ``[a, b]`` (see :class:`GumbelSoftmax`); ``K`` is its size.
        num_samples: Latent samples per example.
        tau: Initial temperature.
        num_flows: Planar flows (``Planar`` only; validated for every variant).
        threshold: Remaining stick mass at which SB stops breaking, in ``(0, 1)`` (the authors' 0.99 of
            accumulated mass is 0.01 here).
        delta: The positive constant of ``softmax++``.
        mc_samples: Monte Carlo draws of the SB and Planar posterior tables (see :class:`IGRCategorical`)
            and of the SB prior fit.
        quadrature_nodes: Gauss-Legendre nodes per panel of the I tables (see :func:`gaussian_argmax_log_probs`).
        seed: Seed of the Monte Carlo tables and fits (fixed, so tables are deterministic functions).

    Raises:
        ValueError: For an unknown variant (listing I, SB, Planar), a non-positive temperature,
            ``num_flows < 1``, a threshold outside ``(0, 1)``, a non-positive ``delta``, too few Monte
            Carlo draws or quadrature nodes, or a window (later: a table) with fewer than two outcomes.
    """

    def __init__(
        self,
        variant: IGRVariant = "I",
        window: WindowArg = None,
        num_samples: int = 1,
        tau: float = 1.0,
        num_flows: int = 2,
        threshold: float = 0.01,
        delta: float = 1.0,
        mc_samples: int = 4096,
        quadrature_nodes: int = 8,
        seed: int = 0,
    ):
        if variant not in VARIANTS:
            raise ValueError(f"unknown IGR variant {variant!r}; accepted: {', '.join(VARIANTS)}")
        super().__init__(num_samples=num_samples, tau=tau)
        self.variant = variant
        self.window = check_window(window)
        self.num_flows = _check_int("num_flows", num_flows, 1)
        self.threshold = _check_open_unit("threshold", threshold, "the remaining stick mass at which SB stops")
        self.delta = _check_positive("delta", delta)
        self.mc_samples = _check_int("mc_samples", mc_samples, 2)
        self.quadrature_nodes = _check_int("quadrature_nodes", quadrature_nodes, 2)
        self.seed = _check_int("seed", seed, 0)
        self._fits: dict[int, tuple[DiscreteFamily, IGRPriorFit]] = {}

    # -- sizes and layout -----------------------------------------------------------------------------
    def _table(self, prior: Prior) -> DiscreteFamily:
        table = _window_table(prior, self.window)
        if table.num_outcomes < 2:
            raise ValueError(
                f"IGR needs a table of at least two outcomes; the {prior.family.family_name} prior on window "
                f"{table.window} has {table.num_outcomes}"
            )
        return table

    def raw_size(self, prior: Prior) -> int:
        m = self._table(prior).num_outcomes - 1
        return 2 * m + (self.num_flows * (2 * m + 1) if self.variant == "Planar" else 0)

    def _split(self, params: Tensor, m: int) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor, Tensor] | None]:
        loc, log_scale = params[..., :m], params[..., m : 2 * m]
        if self.variant != "Planar":
            return loc, log_scale, None
        flows = params[..., 2 * m :].unflatten(-1, (self.num_flows, 2 * m + 1))
        return loc, log_scale, (flows[..., :m], flows[..., m : 2 * m], flows[..., 2 * m])

    # -- the prior ------------------------------------------------------------------------------------
    def fitted_prior(self, prior: Prior) -> IGRPriorFit:
        """The Gaussian prior fitted to ``prior``'s table on the window (cached per table and settings)."""
        table = self._table(prior)
        hit = self._fits.get(id(table))  # the prior caches its tables: the same object while it is unchanged
        if hit is not None and hit[0] is table:
            return hit[1]
        kind = "SB" if self.variant == "SB" else "I"
        log_pmf = table.log_pmf.detach().double().cpu()
        settings = (kind, self.seed, self.mc_samples, self.quadrature_nodes)
        key = (*settings, tuple(log_pmf.shape), tuple(log_pmf.flatten().tolist()))
        fit = _PRIOR_FITS.get(key)
        if fit is None:
            fit = _PRIOR_FITS[key] = fit_igr_prior(
                log_pmf, kind, mc_samples=self.mc_samples, seed=self.seed, quadrature_nodes=self.quadrature_nodes
            )
        self._fits[id(table)] = (table, fit)
        return fit

    def raw_like(self, prior: Prior) -> Tensor:
        """Encoder outputs whose Gaussian is the fitted prior (with identity flows for Planar)."""
        table = self._table(prior)
        fit = self.fitted_prior(prior)
        parts = [fit.loc, fit.log_scale]
        if self.variant == "Planar":
            parts.append(self._identity_flows(fit.loc.shape[-1]).expand(fit.loc.shape[:-1] + (-1,)))
        return torch.cat(parts, -1).to(table.log_pmf)

    def _identity_flows(self, m: int) -> Tensor:
        """Flow parameters with ``u_hat = 0``: fixed random unit normals ``w``, ``u = log(e - 1) w``, ``b = 0``.

        ``u`` parallel to ``w`` with ``w . u = log(e - 1)`` gives ``softplus(w . u) - 1 = 0``, hence
        ``u_hat = 0`` and ``f(y) = y``; distinct ``w`` per flow break the symmetry between flows.
        """
        generator = torch.Generator().manual_seed(self.seed + 2)
        w = torch.randn(self.num_flows, m, generator=generator, dtype=torch.float64)
        w = w / w.norm(dim=-1, keepdim=True)
        u = math.log(math.e - 1.0) * w
        return torch.cat([u, w, torch.zeros(self.num_flows, 1, dtype=torch.float64)], -1).flatten()

    def prior_distribution(self, posterior: IGRCategorical, prior: Prior) -> IGRCategorical:
        """The categorical induced by the fitted Gaussian prior (exact for I and Planar, estimated for SB)."""
        table = self._table(prior)
        fit = self.fitted_prior(prior)
        like = table.log_pmf if posterior is None else posterior.outcomes
        return IGRCategorical(
            fit.loc.to(like),
            fit.log_scale.to(like),
            table.outcomes.to(like),
            table.window,
            variant="SB" if self.variant == "SB" else "I",
            log_pmf=fit.log_probs.to(like),
            tail_mass=table.tail_mass,
        )

    def posterior(self, params: Tensor, prior: Prior) -> IGRCategorical:
        """The categorical the posterior Gaussian induces as ``tau -> 0`` (see :class:`IGRCategorical`)."""
        table = self._table(prior)
        loc, log_scale, flows = self._split(params, table.num_outcomes - 1)
        return self._induced_categorical(loc, log_scale, flows, table.outcomes.to(params), table.window)

    def _induced_categorical(
        self,
        loc: Tensor,
        log_scale: Tensor,
        flows: tuple[Tensor, Tensor, Tensor] | None,
        outcomes: Tensor,
        window: Window,
    ) -> IGRCategorical:
        """The categorical over ``outcomes`` that this estimator's Gaussian ``(loc, log_scale)`` induces."""
        return IGRCategorical(
            loc,
            log_scale,
            outcomes,
            window,
            variant=self.variant,
            flows=flows,
            mc_samples=self.mc_samples,
            quadrature_nodes=self.quadrature_nodes,
            seed=self.seed,
        )

    # -- the estimate ---------------------------------------------------------------------------------
    def forward(self, params: Tensor, objective: Objective, prior: Prior, kl: bool = True) -> EstimatorOutput:
        self.check_params(params, prior)
        table = self._table(prior)
        m = table.num_outcomes - 1
        outcomes = table.outcomes.to(params)
        loc, log_scale, flows = self._split(params, m)
        noise = torch.randn((self.num_samples,) + loc.shape, dtype=params.dtype, device=params.device)
        y = loc + log_scale.exp() * noise
        log_det = None
        if self.variant == "SB":
            x = stick_breaking(y)
        elif self.variant == "Planar":
            x, log_det = apply_planar_flows(y, flows)
        else:
            x = y
        stats = {"trunc_n": torch.tensor(float(table.num_outcomes))}
        if self.training:
            used = m
            if self.variant == "SB":
                used = stick_breaking_truncation(y, self.threshold)
                remaining = stick_breaking_remaining(y.detach())[..., used - 1].exp().max()
                stats.update(trunc_n=torch.tensor(float(used + 1)), sb_remaining_mass=remaining.float())
            weights = softmax_pp(x[..., :used], self.tau, self.delta)
            sample = weights @ outcomes[: used + 1]
        else:
            scores = torch.cat([x, torch.zeros_like(x[..., :1])], -1)
            sample = outcomes[scores.argmax(-1)]
        value = self.check_objective(objective(sample), params.shape[0])
        if not kl:
            kl_term = value.new_zeros(params.shape[0])
        else:
            fit = self.fitted_prior(prior)
            loc0, log_scale0 = fit.loc.to(params), fit.log_scale.to(params)
            if self.variant == "Planar":
                log_q = (-log_scale - 0.5 * noise.square() - _LOG_SQRT_2PI).sum(-1)
                log_p = (-log_scale0 - 0.5 * ((x - loc0) / log_scale0.exp()).square() - _LOG_SQRT_2PI).sum(-1)
                kl_term = (log_q - log_det - log_p).sum(-1).mean(0)
            else:
                kl_term = gaussian_kl(loc, log_scale, loc0, log_scale0).sum(-1)
        loss = value.mean(0) + kl_term
        stats["trunc_tail_mass"] = table.tail_mass.detach().float().mean()
        posterior = self._induced_categorical(loc, log_scale, flows, outcomes, table.window)
        return EstimatorOutput(sample, value, kl_term, loss, loss.mean(), posterior, stats)

    def extra_repr(self) -> str:
        extra = {"SB": f", threshold={self.threshold}", "Planar": f", num_flows={self.num_flows}"}.get(self.variant, "")
        return f"variant={self.variant!r}, window={self.window}{extra}, delta={self.delta}, {super().extra_repr()}"


__all__ = [
    "VARIANTS",
    "GumbelSoftmax",
    "IGR",
    "IGRCategorical",
    "IGRPriorFit",
    "IGRVariant",
    "apply_planar_flows",
    "fit_igr_prior",
    "gaussian_argmax_log_probs",
    "gaussian_kl",
    "planar_flow",
    "planar_flow_inverse",
    "softmax_pp",
    "softmax_pp_inverse",
    "stick_breaking",
    "stick_breaking_remaining",
    "stick_breaking_truncation",
]
