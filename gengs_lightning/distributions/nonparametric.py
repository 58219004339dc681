"""Nonparametric truncation: the smallest window holding ``1 - eps`` of the mass (journal Algorithm 2)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from gengs_lightning.checks import check_int, check_number
from gengs_lightning.distributions.grid import as_grid_param, grid_theta
from gengs_lightning.distributions.window import Window

if TYPE_CHECKING:
    from gengs_lightning.distributions.truncated import TruncatedCount


def check_eps(eps: float) -> float:
    """Return ``eps`` if it is a tail mass in ``(0, 1)``.

    Raises:
        ValueError: Otherwise, naming the value.
    """
    return float(check_number("eps", eps, 0, 1, meaning="the tail mass left outside the window"))


@torch.no_grad()
def quantile_window(
    family: type[TruncatedCount],
    params: dict[str, Tensor | float],
    eps: float,
    max_size: int,
    two_sided: bool = False,
) -> Window:
    """The smallest window that holds at least ``1 - eps`` of every batch member's mass, capped.

    One-sided: ``[0, n - 1]`` with the smallest ``n`` such that ``P(X >= n) <= eps`` for every member.
    Two-sided: ``[a, b]`` with ``P(X < a) <= eps / 2`` and ``P(X > b) <= eps / 2`` for every member
    (journal Section 4, Algorithm 2). The window never extends past ``max_size - 1``; when the cap
    binds, more than ``eps`` is left outside, which the caller can read from the distribution's
    ``tail_mass``.

    Args:
        family: A truncatable count family.
        params: Its parameters as the family names them (its ``params``), any batch shape.
        eps: Tail mass allowed outside the window, in ``(0, 1)``.
        max_size: Largest window size (and largest outcome + 1).
        two_sided: Whether to also cut the left tail.

    Returns:
        The chosen window.
    """
    check_eps(eps)
    check_int("max_size", max_size, 1)
    device = next((p.device for p in params.values() if torch.is_tensor(p)), None)
    grid = torch.arange(max_size, dtype=torch.float64, device=device)
    eta, log_norm, _ = family.natural(**{name: torch.as_tensor(p, dtype=torch.float64) for name, p in params.items()})
    base = family.base_measure(grid, **{name: as_grid_param(p) for name, p in params.items()})
    log_pmf = grid_theta(*torch.broadcast_tensors(eta, log_norm), grid, base)
    log_cdf = log_pmf.logcumsumexp(-1).reshape(-1, max_size)
    side_eps = eps / 2 if two_sided else eps
    reached = log_cdf >= math.log1p(-side_eps)
    high = torch.where(reached.any(-1), reached.int().argmax(-1), max_size - 1).max()
    low = (log_cdf <= math.log(side_eps)).sum(-1).min() if two_sided else torch.zeros((), dtype=torch.long)
    low = int(low.clamp_max(high))
    return Window(low, int(high))
