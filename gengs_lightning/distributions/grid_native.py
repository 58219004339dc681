"""The folded table's forward and backward passes on CPU by the native kernel ``native/folded_table.cpp``.

The kernel runs the eager route of :mod:`~gengs_lightning.distributions.grid` row by row in one call
(the grid, the tail series, the range sums a row needs, the edges' means and the outside mass), so a
call costs a few microseconds plus the arithmetic instead of some forty tensor operations. Rows whose
series is not exact are returned flagged, for the caller's complement and continued-fraction routes.
Large calls split their rows over ``torch.get_num_threads()`` threads (the kernel's own).
"""

from __future__ import annotations

import ctypes
from typing import NamedTuple

import torch
from torch import Tensor

from gengs_lightning import native

_I64, _I32, _PTR = ctypes.c_int64, ctypes.c_int32, ctypes.c_void_p
#: Per-row float64 outputs of the forward kernel, in its argument order.
_ROW_OUTPUTS = ("at_high", "log_high", "mean_low", "mean_high", "log_below", "log_head", "mean_head", "outside")


class NativeTable(NamedTuple):
    """What the forward kernel returns: the table, the per-row results and the inexact rows."""

    table: Tensor
    at_high: Tensor
    log_high: Tensor
    mean_low: Tensor
    mean_high: Tensor
    log_below: Tensor
    log_head: Tensor
    mean_head: Tensor
    outside: Tensor
    inexact: Tensor


def _library() -> ctypes.CDLL | None:
    library = native.load("folded_table")
    if library is not None and library.gengs_folded_forward.restype is not _I64:
        library.gengs_folded_forward.argtypes = [_I64] * 3 + [_PTR] * 6 + [_I64, _I32] + [_PTR] * 10 + [_I64]
        library.gengs_folded_forward.restype = _I64
        library.gengs_folded_backward.argtypes = [_I64] * 3 + [_I32] + [_PTR] * 5 + [_I64]
        library.gengs_folded_backward.restype = None
    return library


def usable(tensor: Tensor) -> bool:
    """Whether the native kernel can compute for ``tensor``'s device (CPU, kernel built)."""
    return tensor.device.type == "cpu" and _library() is not None


def _flat(x: Tensor) -> Tensor:
    return x.reshape(-1).contiguous()


def forward(
    eta: Tensor,
    log_norm: Tensor,
    recurrence: tuple[Tensor, Tensor, Tensor],
    h: Tensor,
    low: int,
    high: int,
    dtype: torch.dtype,
) -> NativeTable:
    """The folded table on ``[low, high]`` for every row of the (float64, CPU) parameters.

    Args:
        eta: Natural parameter, batch-shaped.
        log_norm: Log-normaliser, same shape.
        recurrence: ``(alpha, beta, 1 - beta)``, same shape.
        h: Base measure on ``0 .. high``: ``(high + 1,)`` or broadcastable to ``(*batch, high + 1)``.
        low: Lower edge of the window.
        high: Upper edge of the window.
        dtype: Dtype of the table.

    Returns:
        The table ``(rows, n)`` (its upper edge unset on the inexact rows) and the per-row float64
        results, with the indices of the rows whose tail series is not exact.
    """
    rows, m = eta.numel(), high + 1
    h = h.contiguous() if h.dim() == 1 else h.expand(*eta.shape, m).reshape(rows, m).contiguous()
    eta, log_norm, alpha, beta, beta_c = (_flat(x) for x in (eta, log_norm, *recurrence))
    out_double = dtype != torch.float32
    table = torch.empty(rows, m - low, dtype=torch.float64 if out_double else torch.float32)
    per_row = torch.empty(len(_ROW_OUTPUTS), rows, dtype=torch.float64)
    exact = torch.empty(rows, dtype=torch.uint8)
    inputs = (eta, log_norm, alpha, beta, beta_c, h)
    inexact = _library().gengs_folded_forward(
        rows, low, high, *(x.data_ptr() for x in inputs), 0 if h.dim() == 1 else m, int(out_double),
        table.data_ptr(), *(x.data_ptr() for x in per_row), exact.data_ptr(), torch.get_num_threads(),
    )  # fmt: skip
    rows_left = (exact == 0).nonzero().squeeze(-1) if inexact else exact.new_empty(0, dtype=torch.long)
    return NativeTable(table.to(dtype), *per_row.unbind(0), rows_left)


def backward(grad: Tensor, mean_low: Tensor, mean_high: Tensor, low: int, high: int) -> tuple[Tensor, Tensor]:
    """``d/d eta`` and ``d/dA`` of ``sum(grad * table)``, float64, shaped like ``mean_low`` (see grid's docstring)."""
    shape = mean_low.shape
    if grad.dtype not in (torch.float32, torch.float64):
        grad = grad.double()
    grad = grad.reshape(-1, high - low + 1).contiguous()
    mean_low, mean_high = _flat(mean_low), _flat(mean_high)  # held: the kernel reads their memory
    out = torch.empty(2, grad.shape[0], dtype=torch.float64)
    _library().gengs_folded_backward(
        grad.shape[0], low, high, int(grad.dtype == torch.float64), grad.data_ptr(),
        mean_low.data_ptr(), mean_high.data_ptr(), out[0].data_ptr(), out[1].data_ptr(), torch.get_num_threads(),
    )  # fmt: skip
    return out[0].view(shape), out[1].view(shape)
