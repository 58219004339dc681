"""The folded table's forward and backward passes on CPU by the native kernel ``native/folded_table.cpp``.

The kernel runs the eager route of :mod:`~gengs_lightning.distributions.grid` row by row in one call
(the grid, the tail series, the range sums a row needs, the edges' means and the outside mass), so a
call costs a few microseconds plus the arithmetic instead of some forty tensor operations. Rows whose
series is not exact are returned flagged, for the caller's complement and continued-fraction routes.
Large calls split their rows over ``torch.get_num_threads()`` threads (the kernel's own).
"""

from __future__ import annotations

import ctypes
import functools

import torch
from torch import Tensor

from gengs_lightning import native

_I64, _I32, _PTR = ctypes.c_int64, ctypes.c_int32, ctypes.c_void_p
#: Per-row float64 outputs of the forward kernel, the rows of one ``(8, rows)`` buffer in this order.
ROW_OUTPUTS = ("mean_low", "mean_high", "outside", "at_high", "log_high", "log_below", "log_head", "mean_head")


class NativeTable:
    """What the forward kernel returns: the table, the per-row results by name and the inexact rows.

    Attributes:
        table: The table ``(*batch, n)``, its upper edge unset on the inexact rows.
        per_row: The float64 results ``(len(ROW_OUTPUTS), *batch)``, read by name with :meth:`row`.
        inexact: Flat indices of the rows whose tail series is not exact, or ``None``.
    """

    def __init__(self, table: Tensor, per_row: Tensor, inexact: Tensor | None):
        self.table, self.per_row, self.inexact = table, per_row, inexact

    def row(self, name: str) -> Tensor:
        """The result ``name`` (one of :data:`ROW_OUTPUTS`), ``(*batch,)``: a view of ``per_row``."""
        return self.per_row[ROW_OUTPUTS.index(name)]

    def flat(self, name: str) -> Tensor:
        """The result ``name`` as a flat view ``(rows,)``: indexing it reads and writes ``per_row``."""
        return self.row(name).view(-1)


@functools.cache
def _library() -> ctypes.CDLL | None:
    """The kernel's library with its signatures declared, or ``None`` (see :func:`gengs_lightning.native.load`)."""
    library = native.load("folded_table")
    if library is not None:
        library.gengs_folded_forward.argtypes = [_I64] * 3 + [_PTR] * 6 + [_I64, _I32] + [_PTR] * 3 + [_I64]
        library.gengs_folded_forward.restype = _I64
        library.gengs_folded_backward.argtypes = [_I64] * 3 + [_I32] + [_PTR] * 5 + [_I64]
        library.gengs_folded_backward.restype = None
    return library


def usable(tensor: Tensor) -> bool:
    """Whether the native kernel can compute for ``tensor``'s device (CPU, kernel built)."""
    return tensor.device.type == "cpu" and _library() is not None


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
        The table, the per-row results and the inexact rows (``None`` where there are none).
    """
    rows, m = eta.numel(), high + 1
    h = h.contiguous() if h.dim() == 1 else h.expand(*eta.shape, m).reshape(rows, m).contiguous()
    inputs = [x.contiguous() for x in (eta, log_norm, *recurrence, h)]  # held: the kernel reads their memory
    out_double = dtype != torch.float32
    table = torch.empty((*eta.shape, m - low), dtype=torch.float64 if out_double else torch.float32)
    per_row = torch.empty((len(ROW_OUTPUTS), *eta.shape), dtype=torch.float64)
    exact = torch.empty(rows, dtype=torch.uint8)
    inexact = _library().gengs_folded_forward(
        rows, low, high, *[x.data_ptr() for x in inputs], 0 if h.dim() == 1 else m, int(out_double),
        table.data_ptr(), per_row.data_ptr(), exact.data_ptr(), torch.get_num_threads(),
    )  # fmt: skip
    rows_left = (exact == 0).nonzero().squeeze(-1) if inexact else None
    if dtype not in (torch.float32, torch.float64):
        table = table.to(dtype)
    return NativeTable(table, per_row, rows_left)


def backward(grad: Tensor, mean_low: Tensor, mean_high: Tensor, low: int, high: int) -> tuple[Tensor, Tensor]:
    """``d/d eta`` and ``d/dA`` of ``sum(grad * table)``, float64, shaped like ``mean_low`` (see grid's docstring)."""
    if grad.dtype not in (torch.float32, torch.float64):
        grad = grad.double()
    held = [x.contiguous() for x in (grad, mean_low, mean_high)]  # held: the kernel reads their memory
    out = torch.empty((2, *mean_low.shape), dtype=torch.float64)
    _library().gengs_folded_backward(
        mean_low.numel(), low, high, int(grad.dtype == torch.float64), *[x.data_ptr() for x in held],
        out[0].data_ptr(), out[1].data_ptr(), torch.get_num_threads(),
    )  # fmt: skip
    return out[0], out[1]
