"""Monte Carlo statistics of gradient estimates: variance over independent draws and bias."""

from __future__ import annotations

from torch import Tensor


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
