"""The categorical an Invertible Gaussian Reparameterization induces, and the maths it is built from.

IGR (Potapczynski, Loaiza-Ganem and Cunningham, NeurIPS 2020) relaxes a categorical choice over ``K``
categories through a Gaussian ``y`` in ``R^(K-1)``, an invertible map ``h`` (identity, stick breaking or
planar flows) and the invertible ``softmax++``. This module holds those pieces (``softmax_pp``, its
inverse, stick breaking and its truncation, planar flows and their inverse, the Gaussian KL), each
checkable on its own, and :class:`IGRCategorical`, the law of the category that the relaxation picks
as ``tau -> 0`` over a prior table's outcomes: the discrete ``q(z | x)`` of
:class:`~gengs_lightning.estimators.IGR`. The Gaussian prior fitted to a table is in
:mod:`~gengs_lightning.distributions.igr_prior`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import Distribution
from torch.special import log_ndtr

from gengs_lightning.checks import check_choice
from gengs_lightning.distributions.truncated import TruncatedDiscrete
from gengs_lightning.distributions.window import Window

#: The IGR variants: identity, stick-breaking and planar flows before ``softmax++``.
IGRVariant = Literal["I", "SB", "Planar"]
VARIANTS: tuple[str, ...] = get_args(IGRVariant)

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
#: Temperature of the smooth surrogate whose gradient the Monte Carlo tables carry (see ``IGRCategorical``).
_SMOOTHING_TAU = {"SB": 0.02, "Planar": 0.1}
#: Pseudo-count added to every category of a Monte Carlo table (Krichevsky-Trofimov).
_PSEUDO_COUNT = 0.5
#: Elements of the largest intermediate tensor of the quadrature and Monte Carlo tables.
_CHUNK_ELEMENTS = 1 << 22


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
        check_choice("IGR variant", variant, VARIANTS)
        if loc.shape[-1] + 1 != outcomes.shape[0]:
            raise ValueError(
                f"{loc.shape[-1]} Gaussian dimensions need {loc.shape[-1] + 1} outcomes, got {outcomes.shape[0]}"
            )
        self.loc, self.log_scale, self.flows, self.variant = loc, log_scale, flows, variant
        self.mc_samples, self.quadrature_nodes, self.seed = mc_samples, quadrature_nodes, seed
        self._tables: dict[bool, Tensor] = {}
        batch = torch.broadcast_shapes(loc.shape[:-1], log_scale.shape[:-1])
        Distribution.__init__(self, batch, outcomes.shape[1:], validate_args=False)
        self._set_table(log_pmf, outcomes, window, tail_mass)

    @property
    def log_pmf(self) -> Tensor:
        """``log pi`` of the induced categorical, ``(*batch, K)``, computed on first use (see the class).

        Computed once with gradient and once without, as first asked for in each mode (the Monte Carlo
        tables' graphs are large), unless a table was given.
        """
        grad = torch.is_grad_enabled()
        table = self._tables.get(True, self._tables.get(grad))
        if table is None:
            table = self._tables[grad] = self._compute()
        return table

    @log_pmf.setter
    def log_pmf(self, table: Tensor | None) -> None:
        """A precomputed table (``None``: computed on first use)."""
        self._tables.clear()
        if table is not None:
            self._tables[True] = table

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
