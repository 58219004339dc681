"""Monte Carlo statistics of gradient estimates: variance over independent draws and bias."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor


def gradient_draws(surrogate: Callable[[], Tensor], params: Sequence[Tensor], num_draws: int) -> Tensor:
    """Draw ``num_draws`` independent gradient estimates of ``params``.

    Args:
        surrogate: Builds a fresh surrogate loss (new noise on every call) whose gradient is one draw.
        params: Tensors to differentiate with respect to.
        num_draws: Number of draws ``M``.

    Returns:
        The draws, flattened and concatenated over ``params``, shape ``(M, P)``.
    """
    if num_draws < 2:
        raise ValueError(f"gradient statistics need at least 2 draws, got {num_draws}")
    draws = []
    for _ in range(num_draws):
        grads = torch.autograd.grad(surrogate(), params, allow_unused=True)
        flat = [(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params, strict=True)]
        draws.append(torch.cat(flat))
    return torch.stack(draws)


def gradient_statistics(draws: Tensor, exact: Tensor | None = None) -> dict[str, Tensor]:
    """Variance and bias of gradient draws ``(M, P)``.

    ``grad_var`` is the total variance ``sum_p Var[g_p]`` (unbiased over the ``M`` draws), the
    quantity of NeurIPS Figure 3. ``grad_bias`` is ``||mean_m g_m - exact||``; it includes Monte Carlo
    noise of size about ``sqrt(grad_var / M)``, reported as ``grad_bias_stderr``.

    Args:
        draws: Gradient draws, shape ``(M, P)``.
        exact: The exact gradient, shape ``(P,)``, if known.

    Returns:
        ``grad_var`` and, with ``exact``, ``grad_bias`` and ``grad_bias_stderr``.
    """
    variance = draws.var(0, unbiased=True).sum()
    stats = {"grad_var": variance}
    if exact is not None:
        stats["grad_bias"] = (draws.mean(0) - exact.reshape(-1)).norm()
        stats["grad_bias_stderr"] = (variance / draws.shape[0]).sqrt()
    return stats
