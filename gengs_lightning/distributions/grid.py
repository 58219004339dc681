"""The folded log-PMF table of a count exponential family, with a closed-form backward pass.

Every count family here is an exponential family, ``log p_k = eta k + h_k - A(eta)``, with natural
parameter ``eta``, base measure ``h`` and log-normaliser ``A`` (Poisson: ``log rate``, ``-log k!``,
``rate``). The truncated table on a window ``[a, b]`` (journal Definition 3) is

* ``log pi_a = log P(X <= a)``, the exact finite sum;
* ``log pi_k = log p_k`` for ``a < k < b``;
* ``log pi_b = log P(X >= b)``: ``log(1 - P(X < b))`` while that tail holds at least
  :data:`SERIES_THRESHOLD` of the mass, below that the direct sum of :data:`SERIES_TERMS` tail terms
  plus a geometric bound on the rest (finite and accurate where the complement underflows).

It is computed in float64 from one matrix product (``eta k`` and ``h_k`` cancel badly in float32 at
large rates) and returned in the parameters' dtype. Every entry is the log-mass of a set of outcomes,
so its derivative is ``d/d eta = E[X | set]`` and ``d/dA = -1``: the backward pass needs only the
conditional means of the two edge sets, not the ``(batch, n)`` intermediates, and builds no graph.
"""

from __future__ import annotations

import math
import threading
from functools import lru_cache

import torch
from torch import Tensor

#: Below this upper-tail mass the complement ``1 - P(X < b)`` loses float64 precision and the tail is
#: summed directly instead.
SERIES_THRESHOLD = 1e-9
#: Number of tail terms summed explicitly before the geometric remainder.
SERIES_TERMS = 16
_MAX_LOG_RATIO = math.log(0.999)


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
    if h.dim() > 1:
        return eta.unsqueeze(-1) * k + h - log_norm.unsqueeze(-1)
    coefficients = torch.stack([eta.reshape(-1), -log_norm.reshape(-1)], dim=-1)
    rows = torch.stack([k, torch.ones_like(k)])
    buffer = _workspace(math.prod(shape), eta.device) if scratch else None
    if buffer is None:
        return torch.addmm(h, coefficients, rows).reshape(shape)
    return torch.addmm(h, coefficients, rows, out=buffer.view(-1, k.shape[0])).view(shape)


@lru_cache(maxsize=256)
def _range_selector(low: int, high: int, device: str) -> Tensor:
    """Columns that pick, from the grid ``0 .. high + J - 1``, the sums the fold needs.

    Masses of ``[0, low]``, ``[0, high)``, the series ``[high, high + J)`` and ``[0, low)``, then the
    first moments of the first three, as one ``(m, 7)`` matrix, so that all of them come from a single
    matrix product.
    """
    k = torch.arange(high + SERIES_TERMS, dtype=torch.float64)
    masks = torch.stack([k <= low, k < high, k >= high, k < low], dim=-1).double()
    return torch.cat([masks, masks[:, :3] * k.unsqueeze(-1)], dim=-1).to(device)


class _FoldedTable(torch.autograd.Function):
    """Forward: the folded table and the mass outside the window. Backward: see the module docstring."""

    @staticmethod
    def forward(ctx, eta, log_norm, mean, k, h, low: int, high: int, dtype: torch.dtype):
        theta = grid_theta(eta, log_norm, k, h, scratch=True)
        table = theta[..., low : high + 1].to(dtype, copy=True)
        at_high, last, after = theta[..., high].clone(), theta[..., -2].clone(), theta[..., -1].clone()
        head, tail = theta[..., :high], theta[..., high:-1]
        head_max, tail_max = head.amax(-1, keepdim=True), tail.amax(-1, keepdim=True)
        head.sub_(head_max).exp_()
        tail.sub_(tail_max).exp_()
        sums = theta[..., :-1] @ _range_selector(low, high, str(theta.device))
        log_masses = sums[..., :4].log()
        log_masses[..., (0, 1, 3)] += head_max
        log_masses[..., 2:3] += tail_max
        means = sums[..., 4:] / sums[..., :3]
        (log_low, log_head, log_series, log_below), (mean_low, mean_head, mean_series) = (
            log_masses.unbind(-1),
            means.unbind(-1),
        )

        use_complement = log_head < math.log1p(-SERIES_THRESHOLD)
        safe_head = torch.where(use_complement, log_head, -1.0)
        log_complement = log1mexp(safe_head)
        mean_complement = (mean - safe_head.exp() * mean_head) / log_complement.exp()

        log_ratio = torch.nan_to_num(after - last, nan=-math.inf).clamp_max(_MAX_LOG_RATIO)
        log_rest = after - log1mexp(log_ratio)
        ratio = log_ratio.exp()
        log_tail = torch.logaddexp(log_series, log_rest)
        share_rest = (log_rest - log_tail).exp()
        mean_tail = mean_series + share_rest * (k[-1] + ratio / (1.0 - ratio) - mean_series)

        log_high = torch.where(use_complement, log_complement, log_tail)
        mean_high = torch.where(use_complement, mean_complement, mean_tail)
        table[..., 0] = log_low
        table[..., -1] = log_high
        outside = log_below.exp() + (log_high.exp() - at_high.exp()).clamp_min(0.0)
        ctx.save_for_backward(k[low : high + 1], mean_low - low, mean_high - high)
        ctx.shapes = (eta.shape, log_norm.shape)
        ctx.mark_non_differentiable(outside)
        return table, outside.to(dtype)

    @staticmethod
    def backward(ctx, grad: Tensor, _grad_outside: Tensor):
        window, low_offset, high_offset = ctx.saved_tensors
        eta_shape, norm_shape = ctx.shapes
        grad = grad.double()
        grad_eta = grad @ window + grad[..., 0] * low_offset + grad[..., -1] * high_offset
        grad_norm = -grad.sum(-1)
        return grad_eta.sum_to_size(eta_shape), grad_norm.sum_to_size(norm_shape), None, None, None, None, None, None


def folded_table(
    eta: Tensor,
    log_norm: Tensor,
    mean: Tensor,
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
        base_measure: ``k -> h_k`` on a float64 grid.
        low: Lower edge ``a`` of the window.
        high: Upper edge ``b`` of the window (``> low``).
        dtype: Dtype of the table.

    Returns:
        The table ``(*batch, high - low + 1)`` in ``dtype`` and the outside mass ``(*batch,)``.
    """
    k = torch.arange(0, high + SERIES_TERMS + 1, dtype=torch.float64, device=eta.device)
    eta, log_norm, mean = torch.broadcast_tensors(eta, log_norm, mean)
    return _FoldedTable.apply(eta, log_norm, mean.detach(), k, base_measure(k), low, high, dtype)
