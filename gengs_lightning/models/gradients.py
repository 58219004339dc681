"""Monte Carlo statistics of gradient estimates: variance over independent draws and bias."""

from __future__ import annotations

from collections.abc import Iterable

from torch import Tensor


def gradient_statistics(draws: Tensor | Iterable[Tensor], exact: Tensor | None = None) -> dict[str, Tensor]:
    """Variance and bias of gradient draws: an ``(M, P)`` tensor, or ``M`` draws ``(P,)`` one at a time.

    ``grad_var`` is the total variance ``sum_p Var[g_p]`` (unbiased over the ``M`` draws), the
    quantity of NeurIPS Figure 3. ``grad_bias`` is ``||mean_m g_m - exact||``; it includes Monte Carlo
    noise of size about ``sqrt(grad_var / M)``, reported as ``grad_bias_stderr``. Draws given one at a
    time are folded into running float64 sums (Welford's update), so only one is held; a tensor of all
    of them is reduced in two passes.

    Args:
        draws: Gradient draws, an ``(M, P)`` tensor or an iterable of ``M >= 2`` tensors ``(P,)``.
        exact: The exact gradient, shape ``(P,)``, if known.

    Returns:
        ``grad_var`` and, with ``exact``, ``grad_bias`` and ``grad_bias_stderr``.

    Raises:
        ValueError: For fewer than two draws.
    """
    if isinstance(draws, Tensor):
        count, mean, variance = draws.shape[0], draws.mean(0), draws.var(0, unbiased=True).sum()
    else:
        count, mean, squares = 0, None, None
        for draw in draws:
            draw = draw.double()
            count += 1
            if mean is None:
                mean, squares = draw.clone(), draw.new_zeros(draw.shape)
                continue
            delta = draw - mean
            mean += delta / count
            squares += delta * (draw - mean)
        variance = squares.sum() / (count - 1) if count > 1 else None
    if count < 2:
        raise ValueError(f"gradient_statistics needs at least 2 draws, got {count}")
    stats = {"grad_var": variance}
    if exact is not None:
        stats["grad_bias"] = (mean - exact.reshape(-1)).norm()
        stats["grad_bias_stderr"] = (variance / count).sqrt()
    return stats
