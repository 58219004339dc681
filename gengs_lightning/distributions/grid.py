"""The folded log-PMF table of a count family, with a closed-form backward pass.

Every count family here is an exponential family, ``log p_k = eta k + h_k - A(eta)``, with natural
parameter ``eta``, base measure ``h`` and log-normaliser ``A`` (Poisson: ``log rate``, ``-log k!``,
``rate``), and a member of Panjer's class: its terms obey ``(k + 1) p_{k+1} = (alpha + beta k) p_k``
(Poisson ``(rate, 0)``, binomial ``(N q, -q)`` with ``q = p / (1 - p)``, negative binomial
``(r p, p)``, geometric ``(1 - p, 1 - p)``; Sundt and Jewell 1981; Johnson, Kemp and Kotz,
*Univariate Discrete Distributions*, 3rd ed., Section 2.3.1). The truncated table on a window
``[a, b]`` (journal Definition 3) is

* ``log pi_a = log P(X <= a)``: the finite sum, scaled by its own largest term, so that it never
  underflows however far below the window's largest term it lies;
* ``log pi_k = log p_k`` for ``a < k < b``;
* ``log pi_b = log P(X >= b) = log p_b + log F`` with ``F = sum_j p_{b+j} / p_b``, by the first of
  three routes that is exact to float64 resolution: :data:`SERIES_TERMS` terms of ``F`` (products of
  the term ratios of the recurrence) with the rest bracketed (:func:`_series_tail`); where the tail
  holds at least :data:`SERIES_THRESHOLD` of the mass, the complement ``log(1 - P(X < b))``; below
  it, Gauss's continued fraction of ``F``, that of the regularised incomplete beta and gamma
  functions (:func:`log_tail_ratio`).

Every edge is thus accurate to the float64 rounding of its terms (the complement to that rounding
over the tail mass, at most ``1 / SERIES_THRESHOLD`` times more), whatever the parameter and the
window. It is computed in float64 (``eta k`` and ``h_k`` cancel badly in float32 at large rates), each
row by its own elementwise operations and reductions, so that a row is bit for bit what it is alone in
a batch, and returned in the parameters' dtype. On CPU a native kernel computes the grid, the series
and the range sums of all rows in one call (:mod:`~gengs_lightning.distributions.grid_native`) and
leaves only the rows beyond the series to the other two routes; elsewhere PyTorch operations do it all
(:func:`_eager_table`). Every entry is the log-mass of a set of outcomes, so its derivative is
``d/d eta = E[X | set]`` and ``d/dA = -1``: the backward pass needs only the conditional means of the
two edge sets, not the ``(batch, n)`` intermediates, and builds no graph. The upper one follows from
the recurrence summed over ``k >= b``: ``E[X | X >= b] = (alpha + b / F) / (1 - beta)``.
"""

from __future__ import annotations

import functools
import math
import threading

import torch
from torch import Tensor

from gengs_lightning.distributions import grid_native

#: Smallest upper-tail mass taken as the complement ``1 - P(X < b)``, which loses
#: ``log2(1 / P(X >= b))`` bits; below it the tail is summed or a continued fraction.
SERIES_THRESHOLD = 1e-3
#: Number of tail terms summed before the bracketed rest.
SERIES_TERMS = 24
#: Largest relative uncertainty of the direct tail sum, and the convergence test of the continued
#: fraction: float64 resolution.
SERIES_TOLERANCE = torch.finfo(torch.float64).eps
#: Levels of the continued fraction between two convergence tests.
_CHECK_EVERY = 4
#: Cap on the levels of the continued fraction; it needs ``O(sqrt(b))`` of them beyond the mean
#: (Numerical Recipes, 3rd ed., Section 6.4).
_MAX_LEVELS = 100_000
_LOG_THRESHOLD = math.log(SERIES_THRESHOLD)
_TINY = torch.finfo(torch.float64).tiny
_LOG_TINY = math.log(_TINY)


def as_grid_param(param: Tensor | float) -> Tensor:
    """Cast a parameter to a float64 tensor with a trailing axis, to broadcast against an outcome grid."""
    param = torch.as_tensor(param, dtype=torch.float64)
    return param.unsqueeze(-1) if param.dim() > 0 else param


def log1mexp(x: Tensor) -> Tensor:
    """``log(1 - exp(x))`` for ``x < 0``, to an absolute error of about 1e-16 (enough for log-masses)."""
    return torch.log(-torch.expm1(x))


_scratch = threading.local()


def _workspace(numel: int, device: torch.device) -> Tensor | None:
    """A reusable float64 buffer for CPU grids (``None`` elsewhere).

    A fresh multi-megabyte CPU tensor is served by ``mmap`` and page-faults on first touch, which
    costs more than the arithmetic on it; the grid is consumed inside one forward pass, so one
    buffer per thread is reused instead. CUDA's caching allocator already avoids this.
    """
    if device.type != "cpu":
        return None
    buffer = getattr(_scratch, "buffer", None)
    if buffer is None or buffer.numel() < numel:
        with torch.inference_mode(False):  # a normal tensor, usable in and out of inference mode
            buffer = _scratch.buffer = torch.empty(numel, dtype=torch.float64)
    return buffer[:numel]


def grid_theta(eta: Tensor, log_norm: Tensor, k: Tensor, h: Tensor, scratch: bool = False) -> Tensor:
    """``eta * k + h - A`` in float64 with shape ``(*batch, m)``, without autograd.

    Args:
        eta: Natural parameter, batch-shaped (float64).
        log_norm: Log-normaliser ``A(eta)``, same shape (float64).
        k: Grid of outcomes, shape ``(m,)`` (float64).
        h: Base measure on the grid, shape ``(m,)`` or ``(*batch, m)`` (float64).
        scratch: Write into the thread's reusable CPU buffer; the result is then only valid until
            the next call with ``scratch=True``.
    """
    eta, log_norm = eta.detach(), log_norm.detach()
    shape = eta.shape + k.shape
    buffer = _workspace(math.prod(shape), eta.device) if scratch else None
    # one exactly rounded operation per pass, so that every row is computed as it would be alone (a
    # BLAS ``addmm`` picks its kernel, and with it its rounding, by the batch's shape)
    theta = torch.mul(eta.unsqueeze(-1), k, out=None if buffer is None else buffer.view(shape))
    return theta.add_(h).sub_(log_norm.unsqueeze(-1))


def _cached(build):
    """``lru_cache`` for constant tensors, built as normal tensors even under ``torch.inference_mode``.

    They are reused by later calls, where autograd may save them for backward (an inference tensor
    cannot be saved).
    """

    @functools.lru_cache(maxsize=1024)
    def cached(*args):
        with torch.inference_mode(False):
            return build(*args)

    return functools.wraps(build)(cached)


@_cached
def _interior(low: int, high: int, device: str) -> Tensor:
    """The outcomes ``low .. high`` with both edges set to 0 (their sets' conditional means replace them)."""
    k = torch.arange(low, high + 1, dtype=torch.float64)
    k[[0, -1]] = 0.0
    return k.to(device)


@_cached
def _series_points(high: int, device: str) -> tuple[Tensor, Tensor]:
    """``k = high .. high + J - 1`` and ``1 / (k + 1)``, for the term ratios of the tail series."""
    k = torch.arange(high, high + SERIES_TERMS, dtype=torch.float64)
    return k.to(device), (k + 1.0).reciprocal().to(device)


def _range_sums(theta: Tensor, k: Tensor, low: int, high: int) -> tuple[Tensor, ...]:
    """Log-masses and conditional means of the ranges below ``high``, each scaled by its own maximum.

    Overwrites ``theta[..., :high]``. Every range sum is taken relative to the largest term it
    contains, so none of them underflows however far the window lies from the mass: ``[0, low]`` by
    its own maximum, ``(low, high)`` by that of ``[0, high)``.

    Args:
        theta: The grid ``log p_k`` on ``k = 0 .. high``, shape ``(rows, high + 1)``.
        k: The grid's outcomes ``0 .. high`` (float64).
        low: Lower edge ``a`` of the window.
        high: Upper edge ``b`` of the window.

    Returns:
        ``log P(X <= low)``, ``E[X | X <= low]``, ``log P(X < low)``, ``log P(X < high)`` and
        ``E[X | X < high]``, each ``(*batch,)``.
    """
    lower, middle = theta[..., : low + 1], theta[..., low + 1 : high]
    low_max = lower.amax(-1, keepdim=True)
    head_max = torch.maximum(low_max, middle.amax(-1, keepdim=True)) if high > low + 1 else low_max
    lower.sub_(low_max)
    middle.sub_(head_max)
    # terms below the smallest normal float64 are negligible against their range's maximum (1), and
    # flooring them there keeps exp off its slow underflow path. Each sum is a reduction of its row alone
    # (a BLAS product's rounding depends on the batch's shape, and a row must not depend on its batch).
    terms = theta[..., :high].clamp_min_(_LOG_TINY).exp_()
    moments = terms * k[:high]
    s_low, s_below, s_middle = terms[..., : low + 1].sum(-1), terms[..., :low].sum(-1), terms[..., low + 1 :].sum(-1)
    s_low_moment, s_middle_moment = moments[..., : low + 1].sum(-1), moments[..., low + 1 :].sum(-1)
    low_max, head_max = low_max.squeeze(-1), head_max.squeeze(-1)
    low_scale = torch.exp(low_max - head_max)
    s_head = torch.addcmul(s_middle, s_low, low_scale)
    head_moment = torch.addcmul(s_middle_moment, s_low_moment, low_scale)
    return (
        s_low.log() + low_max,
        s_low_moment / s_low,
        s_below.log() + low_max,
        s_head.log() + head_max,
        head_moment / s_head,
    )


def _series_tail(log_at_high: Tensor, alpha: Tensor, beta: Tensor, beta_c: Tensor, high: int):
    """``log P(X >= b)`` from :data:`SERIES_TERMS` terms and a bracketed rest, and whether it is exact.

    The terms ``t_j = p_{b+j} / p_b`` are products of the term ratios ``r_k = p_{k+1} / p_k =
    (alpha + beta k) / (k + 1)``, which are monotone in ``k`` (the derivative ``(beta - alpha) /
    (k + 1)^2`` has the sign of ``beta - alpha``) and tend to ``beta`` (or reach 0 at the end of a
    finite support). From ``K = b + J`` on, the rest ``R = sum_i t_{J+i} = t_J sum_i prod_{l < i}
    r_{K+l}`` therefore lies in a bracket:

    * increasing ratios (``beta > alpha``): between the geometric series ``t_J / (1 - r_K)`` and
      ``t_J / (1 - beta)``;
    * non-increasing ratios: below ``t_J / (1 - r_K)``, and above both ``t_J / (1 - max(beta, 0))``
      and, as ``r_{K+l} >= r_K - l delta`` with ``delta = (alpha - beta) / (K + 1)^2`` (mean value
      theorem) and ``prod_l (1 - x_l) >= 1 - sum_l x_l``, ``t_J (1 / (1 - r_K) - delta r_K /
      (1 - r_K)^3)``: the bracket is narrower than the first omitted term by a factor of about
      ``delta / (1 - r_K)^2``, ``rate / K^2`` for the Poisson.

    The midpoint is used; the route is exact where the half-width is within
    :data:`SERIES_TOLERANCE` of ``F``. ``1 - r_K = (1 - beta) - (alpha - beta) / (K + 1)`` is formed
    without cancellation, so that the geometric family (``alpha = beta``, an empty bracket) is exact
    at any ``beta``. Rounding: ``t_j`` carries ``~3 j`` ulps, ``F`` the ulps of its bulk.

    Args:
        log_at_high: ``log p_b``.
        alpha: First recurrence coefficient.
        beta: Second recurrence coefficient.
        beta_c: ``1 - beta``, computed without cancellation.
        high: The edge ``b``.

    Returns:
        ``log P(X >= b)`` and whether that route is exact (false where the bracket is wide or not
        finite, e.g. where the terms still grow at ``K``).
    """
    k, inv_k1 = _series_points(high, str(alpha.device))
    # beta k + alpha without a fused multiply-add: exactly 0 at a binomial's k = N, negative beyond
    terms = (beta.unsqueeze(-1) * k).add_(alpha.unsqueeze(-1)).mul_(inv_k1).clamp_min_(0.0).cumprod_(-1)
    partial, last = terms[..., :-1].sum(-1).add_(1.0), terms[..., -1]
    next_k = high + SERIES_TERMS
    slope = (alpha - beta).div_((next_k + 1.0) ** 2)
    ratio_c = torch.addcmul(beta_c, slope, slope.new_tensor(-(next_k + 1.0))).clamp_max_(1.0)
    inv_c = torch.where(ratio_c > 0.0, ratio_c.reciprocal(), math.inf)
    inv_beta_c = beta_c.reciprocal()
    inv_high = torch.maximum(inv_c, inv_beta_c)
    inv_low = inv_c - slope.clamp_min_(0.0).mul_(1.0 - ratio_c).mul_(inv_c.pow(3))
    inv_low = torch.maximum(inv_low, torch.minimum(inv_c, inv_beta_c)).clamp_min_(1.0)
    value = torch.addcmul(partial, last, (inv_high + inv_low).mul_(0.5))
    error = (inv_high - inv_low).mul_(last).mul_(0.5)
    return log_at_high + value.log(), (error <= SERIES_TOLERANCE * value) & (value < math.inf)


def log_tail_ratio(alpha: Tensor, beta: Tensor, beta_c: Tensor, high: int) -> Tensor:
    """``log F`` with ``F = P(X >= b) / p_b`` for a family with recurrence ``(alpha, beta)``, any ``beta < 1``.

    ``F = sum_j prod_{i < j} (alpha + beta (b + i)) / (b + i + 1) = 2F1(1, b + alpha / beta; b + 1; beta)``,
    evaluated as Gauss's continued fraction ``1 / (1 + d_1 / (1 + d_2 / (1 + ...)))`` with
    ``d_{2m+1} = -(b + m) (alpha + beta (b + m)) / ((b + 2m) (b + 2m + 1))`` and
    ``d_{2m} = m (alpha - m beta) / ((b + 2m - 1) (b + 2m))``: the continued fraction of the
    regularised incomplete beta function (DLMF 8.17.22; Numerical Recipes, 3rd ed., Section 6.4),
    written in the recurrence's coefficients so that the Poisson case ``beta = 0`` is its confluent
    limit, the incomplete gamma function. A negative ``beta`` (the binomial) is first mapped to
    ``-beta / (1 - beta)`` in ``(0, 1)`` by Pfaff's transformation (DLMF 15.8.1). The fraction is
    evaluated by the modified Lentz method (Numerical Recipes, Section 5.2) until a level changes
    no value by more than :data:`SERIES_TOLERANCE`. It is used below :data:`SERIES_THRESHOLD`, where
    ``b`` lies beyond the mean and the fraction converges in ``O(sqrt(b))`` levels.

    Args:
        alpha: First recurrence coefficient, one dimension (float64).
        beta: Second recurrence coefficient, same shape (float64).
        beta_c: ``1 - beta``, computed without cancellation.
        high: The edge ``b >= 1``.

    Returns:
        ``log F``, same shape.
    """
    b = float(high)
    negative = beta < 0
    log_scale = torch.where(negative, -torch.log(beta_c), 0.0)
    alpha = torch.where(negative, torch.add(alpha, beta, alpha=b - 1.0) / beta_c, alpha)
    beta = torch.where(negative, -beta / beta_c, beta)
    ones = torch.ones_like(alpha)
    value, c, d = ones.clone(), ones.clone(), torch.zeros_like(alpha)
    for first in range(1, _MAX_LEVELS + 1, _CHECK_EVERY):
        on_alpha, on_beta = _fraction_coefficients(high, first, str(alpha.device))
        block = torch.outer(alpha, on_alpha).addr_(beta, on_beta)
        for coefficient in block.unbind(-1):
            d = torch.addcmul(ones, coefficient, d).add_(_TINY).reciprocal_()  # _TINY: never exactly 0
            c = torch.div(coefficient, c).add_(1.0).add_(_TINY)
            value.mul_(c).mul_(d)
        if not bool(((c * d - 1.0).abs() > SERIES_TOLERANCE).any()):  # a NaN row (NaN parameters) stops too
            break
    return log_scale - value.log()


@_cached
def _fraction_coefficients(high: int, first: int, device: str) -> tuple[Tensor, Tensor]:
    """``(u, v)`` with ``d_l = u_l alpha + v_l beta`` at the levels ``l = first .. first + C - 1``."""
    b = float(high)
    on_alpha, on_beta = [], []
    for level in range(first, first + _CHECK_EVERY):
        m = level // 2
        if level % 2:  # d_{2m+1} = -(b + m) (alpha + (b + m) beta) / ((b + 2m) (b + 2m + 1))
            scale, shift = -(b + m) / ((b + 2 * m) * (b + 2 * m + 1)), b + m
        else:  # d_{2m} = m (alpha - m beta) / ((b + 2m - 1) (b + 2m))
            scale, shift = m / ((b + 2 * m - 1) * (b + 2 * m)), -m
        on_alpha.append(scale)
        on_beta.append(scale * shift)
    return tuple(torch.tensor(x, dtype=torch.float64, device=device) for x in (on_alpha, on_beta))


def _tail_mean(at_high: Tensor, log_tail: Tensor, alpha: Tensor, beta_c: Tensor, high: int) -> Tensor:
    """``E[X | X >= b] = (alpha + b / F) / (1 - beta)`` with ``1 / F = p_b / P(X >= b)`` (module docstring)."""
    return torch.exp(at_high - log_tail).mul_(high).add_(alpha).div_(beta_c)


def _upper_edge_beyond_series(
    log_head: Tensor,
    mean_head: Tensor,
    at_high: Tensor,
    mean: Tensor,
    alpha: Tensor,
    beta: Tensor,
    beta_c: Tensor,
    high: int,
) -> tuple[Tensor, Tensor]:
    """``log P(X >= b)`` and ``E[X | X >= b]`` for rows whose tail series is not exact.

    The complement ``1 - P(X < b)`` where the tail holds at least :data:`SERIES_THRESHOLD` of the mass,
    Gauss's continued fraction (:func:`log_tail_ratio`) below it and where the complement is NaN.

    Args:
        log_head: ``log P(X < b)``.
        mean_head: ``E[X | X < b]``.
        at_high: ``log p_b``.
        mean: The family's mean.
        alpha: First recurrence coefficient.
        beta: Second recurrence coefficient.
        beta_c: ``1 - beta``.
        high: The edge ``b``.
    """
    log_complement = log1mexp(log_head)
    fraction = ~(log_complement >= _LOG_THRESHOLD)  # also where the complement is NaN
    log_high, mean_high = log_complement, (mean - log_head.exp() * mean_head) / log_complement.exp()
    if fraction.any():
        edge, alpha, beta_c = at_high[fraction], alpha[fraction], beta_c[fraction]
        log_tail = edge + log_tail_ratio(alpha, beta[fraction], beta_c, high)
        log_high[fraction], mean_high[fraction] = log_tail, _tail_mean(edge, log_tail, alpha, beta_c, high)
    return log_high, mean_high


def _eager_table(eta, log_norm, mean, alpha, beta, beta_c, k, h, low: int, high: int, dtype: torch.dtype):
    """The table ``(*batch, n)``, outside mass and edge means ``(*batch,)`` by PyTorch operations (any device).

    Only what a row needs is computed: the upper edge by the series (:func:`_series_tail`) everywhere,
    the sums of the terms below the window's top (:func:`_range_sums`, one ``exp`` of the grid) for the
    rows where the series is not exact and, for a window that starts above 0, for every row (its lower
    edge is such a sum). A window from 0 whose tail the series sums exactly, the usual case of a window
    that holds the posterior, needs no ``exp`` of the grid.
    """
    theta = grid_theta(eta, log_norm, k, h, scratch=True)
    theta = theta.reshape(-1, theta.shape[-1])
    mean, alpha, beta, beta_c = (x.reshape(-1) for x in (mean, alpha, beta, beta_c))
    table = theta[:, low : high + 1].to(dtype, copy=True)
    at_high = theta[:, high].clone()
    log_high, exact = _series_tail(at_high, alpha, beta, beta_c, high)
    mean_high = _tail_mean(at_high, log_high, alpha, beta_c, high)

    rows = (~exact).nonzero().squeeze(-1)
    if low > 0:
        log_low, mean_low, log_below, log_head, mean_head = _range_sums(theta, k, low, high)
        table[:, 0] = log_low
        outside = log_below.exp()
        log_head, mean_head = log_head[rows], mean_head[rows]
    else:  # the lower edge is the outcome 0 itself: P(X <= 0) = p_0, E[X | X <= 0] = 0
        mean_low, outside = torch.zeros_like(at_high), torch.zeros_like(at_high)
        if rows.numel():
            *_, log_head, mean_head = _range_sums(theta[rows], k, low, high)
    if rows.numel():
        log_high[rows], mean_high[rows] = _upper_edge_beyond_series(
            log_head, mean_head, at_high[rows], mean[rows], alpha[rows], beta[rows], beta_c[rows], high
        )
    table[:, -1] = log_high
    outside = outside + (log_high.exp() - at_high.exp()).clamp_min(0.0)
    batch = eta.shape
    return table.view(*batch, -1), outside.view(batch), mean_low.view(batch), mean_high.view(batch)


def _native_table(eta, log_norm, mean, alpha, beta, beta_c, k, h, low: int, high: int, dtype: torch.dtype):
    """What :func:`_eager_table` returns, by the CPU kernel (:mod:`~gengs_lightning.distributions.grid_native`).

    The kernel takes every row through the series route; the rows it flags as inexact get their upper
    edge here from :func:`_upper_edge_beyond_series`, as in the eager route.
    """
    out = grid_native.forward(eta, log_norm, (alpha, beta, beta_c), h, low, high, dtype)
    rows = out.inexact
    if rows is not None:
        mean, alpha, beta, beta_c = (x.reshape(-1)[rows] for x in (mean, alpha, beta, beta_c))
        at_high, log_below = out.flat("at_high")[rows], out.flat("log_below")[rows]
        log_high, out.flat("mean_high")[rows] = _upper_edge_beyond_series(
            out.flat("log_head")[rows], out.flat("mean_head")[rows], at_high, mean, alpha, beta, beta_c, high
        )
        out.table.view(-1, high - low + 1)[rows, -1] = log_high.to(dtype)
        out.flat("outside")[rows] = log_below.exp() + (log_high.exp() - at_high.exp()).clamp_min(0.0)
    # the outside mass leaves as its own tensor: an in-place change to it must not touch the saved means
    return out.table, out.row("outside").clone(), out.row("mean_low"), out.row("mean_high")


class _FoldedTable(torch.autograd.Function):
    """Forward: the folded table and the mass outside the window. Backward: see the module docstring.

    On CPU the native kernel computes both passes (:func:`_native_table`) where it could be built, the
    PyTorch operations of :func:`_eager_table` elsewhere and under ``torch.compile`` (which traces
    them): the same maths, in the same order.
    """

    @staticmethod
    def forward(ctx, eta, log_norm, mean, alpha, beta, beta_c, k, h, low: int, high: int, dtype: torch.dtype):
        ctx.native = not torch.compiler.is_compiling() and grid_native.usable(eta)  # torch.compile traces ops
        route = _native_table if ctx.native else _eager_table
        table, outside, mean_low, mean_high = route(eta, log_norm, mean, alpha, beta, beta_c, k, h, low, high, dtype)
        ctx.save_for_backward(mean_low, mean_high)
        ctx.window = (low, high)
        ctx.shapes = (eta.shape, log_norm.shape)
        outside = outside.to(dtype)
        ctx.mark_non_differentiable(outside)
        return table, outside

    @staticmethod
    def backward(ctx, grad: Tensor, _grad_outside: Tensor):
        mean_low, mean_high = ctx.saved_tensors
        (low, high), (eta_shape, norm_shape) = ctx.window, ctx.shapes
        if ctx.native and grad.device.type == "cpu" and not (grad.requires_grad and torch.is_grad_enabled()):
            grad_eta, grad_norm = grid_native.backward(grad, mean_low, mean_high, low, high)
        else:  # PyTorch operations, also where the backward is differentiated (``create_graph``: REBAR, RELAX)
            grad = grad.double()
            interior = _interior(low, high, str(grad.device))
            grad_eta = (grad * interior).sum(-1) + grad[..., 0] * mean_low + grad[..., -1] * mean_high
            grad_norm = -grad.sum(-1)
        return (grad_eta.sum_to_size(eta_shape), grad_norm.sum_to_size(norm_shape)) + (None,) * 9


def folded_table(
    eta: Tensor,
    log_norm: Tensor,
    mean: Tensor,
    recurrence: tuple[Tensor, Tensor, Tensor],
    base_measure,
    low: int,
    high: int,
    dtype: torch.dtype,
) -> tuple[Tensor, Tensor]:
    """The truncated log-PMF on ``[low, high]`` and the mass of the family outside it.

    Args:
        eta: Natural parameter, batch-shaped float64 (differentiable).
        log_norm: Log-normaliser ``A(eta)``, same shape (differentiable).
        mean: Mean of the untruncated family ``A'(eta)``, same shape (for the complement's gradient).
        recurrence: Coefficients ``(alpha, beta)`` of ``(k + 1) p_{k+1} = (alpha + beta k) p_k`` and
            ``1 - beta`` computed without cancellation, float64, broadcastable to the batch (for the
            upper tail and its conditional mean).
        base_measure: ``k -> h_k`` on a float64 grid.
        low: Lower edge ``a`` of the window.
        high: Upper edge ``b`` of the window (``> low``).
        dtype: Dtype of the table.

    Returns:
        The table ``(*batch, high - low + 1)`` in ``dtype`` and the outside mass ``(*batch,)``.
    """
    k = torch.arange(0, high + 1, dtype=torch.float64, device=eta.device)
    eta, log_norm, mean, *recurrence = torch.broadcast_tensors(eta, log_norm, mean, *recurrence)
    recurrence = [x.detach() for x in recurrence]
    return _FoldedTable.apply(eta, log_norm, mean.detach(), *recurrence, k, base_measure(k), low, high, dtype)
