"""Truncation windows: the finite set of outcomes a count variable is folded onto."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from gengs_lightning.checks import check_int


@dataclass(frozen=True)
class Window:
    """The integer interval ``[low, high]`` of a truncated count variable.

    A one-sided truncation at level ``n`` (paper Definition 1) is ``Window(0, n - 1)``; a two-sided
    truncation ``[a, b]`` (journal Definition 3, NeurIPS Section 4.2) is ``Window(a, b)``. The mass
    of the family below ``low`` is folded into ``low`` and the mass above ``high`` into ``high``.

    Args:
        low: Smallest outcome (``>= 0``).
        high: Largest outcome (``>= low``).

    Raises:
        ValueError: If the bounds are not integers, ``low < 0`` or the window is empty.
    """

    low: int
    high: int

    def __post_init__(self) -> None:
        check_int("window low", self.low, 0, meaning="count families are non-negative")
        check_int("window high", self.high)
        if self.high < self.low:
            raise ValueError(f"window [{self.low}, {self.high}] is empty: its size must be >= 1 (high >= low)")

    @property
    def size(self) -> int:
        """Number of outcomes ``n = high - low + 1``."""
        return self.high - self.low + 1

    def outcomes(self, dtype: torch.dtype = torch.float32, device: torch.device | None = None) -> Tensor:
        """The outcome vector ``c = (low, ..., high)`` (paper Section 3.2)."""
        return torch.arange(self.low, self.high + 1, dtype=dtype, device=device)

    @classmethod
    def of(cls, spec: int | tuple[int, int] | list[int] | Window) -> Window:
        """Build a window from a truncation level ``n`` (``[0, n - 1]``) or a pair ``[a, b]``.

        Raises:
            ValueError: If ``n < 1`` or the pair is not two integers.
        """
        if isinstance(spec, Window):
            return spec
        if isinstance(spec, int) and not isinstance(spec, bool):
            return cls(0, check_int("truncation level n", spec, 1) - 1)
        if isinstance(spec, (tuple, list)) and len(spec) == 2:
            return cls(spec[0], spec[1])
        raise ValueError(f"a window is a truncation level n >= 1 or a pair [low, high] of integers, got {spec!r}")

    def __str__(self) -> str:
        return f"[{self.low}, {self.high}]"
