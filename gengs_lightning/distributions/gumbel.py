"""Gumbel noise and the Gumbel constructions built on it: Gumbel-max, top-k and conditional Gumbels."""

from __future__ import annotations

import torch
from torch import Tensor


def sample_uniform(shape: torch.Size | tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
    """``U(0, 1)`` draws kept off zero (raised to the smallest normal number), so ``log(-log u)`` is finite."""
    return torch.rand(shape, dtype=dtype, device=device).clamp_min_(torch.finfo(dtype).tiny)


def sample_gumbel(
    shape: torch.Size | tuple[int, ...], dtype: torch.dtype, device: torch.device, finite: bool = False
) -> Tensor:
    """Draw standard Gumbel noise ``g = -log(-log(u))`` with ``u ~ Uniform[0, 1)``.

    ``torch.rand`` never returns 1, so ``-log(u) > 0`` and ``g < +inf``; ``u = 0`` gives ``g = -inf``,
    which gives its category zero weight in a softmax and cannot produce NaN. (``-log(E)`` with
    ``E ~ Exponential(1)``, as in ``F.gumbel_softmax``, gives ``+inf`` when ``E`` is exactly zero,
    and ``Tensor.exponential_`` is several times slower than ``torch.rand`` on CPU.)

    Args:
        shape: Shape of the noise.
        dtype: Floating dtype of the noise.
        device: Device of the noise.
        finite: Draw ``u`` with :func:`sample_uniform` instead, so that every ``g`` is finite (for
            constructions that differentiate through the noise, e.g. REBAR's).

    Returns:
        A fresh tensor of Gumbel noise that the caller may modify in place.
    """
    uniform = sample_uniform(shape, dtype, device) if finite else torch.rand(shape, dtype=dtype, device=device)
    return uniform.log_().neg_().log_().neg_()


def with_samples(tensor: Tensor, sample_shape: torch.Size | tuple[int, ...]) -> Tensor:
    """``tensor`` with leading ``sample_shape`` axes, for one draw per sample (no copy).

    One sample is a view (``reshape``), whose backward is free; more are ``expand``, whose backward sums
    the samples' gradients. (``expand`` to one sample would also sum, a full pass over the gradient.)
    """
    sample_shape = torch.Size(sample_shape)
    shape = sample_shape + tensor.shape
    return tensor.reshape(shape) if sample_shape.numel() == 1 else tensor.expand(shape)


def floor_log_pmf(log_pmf: Tensor) -> Tensor:
    """``log_pmf`` with ``-inf`` (zero-mass outcomes) raised to a huge finite negative value.

    Zero-mass outcomes keep a zero weight in every softmax, while ``0 * log q``, ``-inf - (-inf)`` and the
    conditional Gumbels' ``logaddexp`` (and their gradients) stay finite.
    """
    return log_pmf.clamp_min(torch.finfo(log_pmf.dtype).min / 8)


def gumbel_top_k(log_pmf: Tensor, k: int, sample_shape: tuple[int, ...] = ()) -> Tensor:
    """Ordered samples without replacement by the Gumbel-top-k trick (Kool et al. 2019).

    The indices of the ``k`` largest of ``log q + g`` (``g`` standard Gumbel), in decreasing order: the
    first is an exact draw of ``q``, the ``j``-th an exact draw of ``q`` restricted to the categories not
    drawn before it (renormalised).

    Args:
        log_pmf: Log-probabilities ``(..., n)`` (normalisation is irrelevant).
        k: Sample size, ``1 <= k <= n``.
        sample_shape: Independent repetitions in front.

    Returns:
        Indices ``(*sample_shape, ..., k)``.
    """
    with torch.no_grad():
        shape = torch.Size(sample_shape) + log_pmf.shape
        scores = sample_gumbel(shape, log_pmf.dtype, log_pmf.device).add_(floor_log_pmf(log_pmf.detach()))
        return scores.topk(k, dim=-1).indices


def conditional_gumbel(
    log_pmf: Tensor, index: Tensor, uniform: Tensor | None = None, normalized: bool = False
) -> Tensor:
    """Scores ``z~ = log pi + g`` conditioned on ``argmax z~ = index`` (Tucker et al. 2017, Appendix C).

    With normalised ``pi`` and ``v ~ U(0, 1)^n``: ``z~_b = -log(-log v_b)`` (the maximum of Gumbels with
    locations ``log pi`` is a standard Gumbel) and, for ``i != b``,
    ``z~_i = -log(-log v_i / pi_i - log v_b)``, a Gumbel of location ``log pi_i`` truncated below
    ``z~_b``. Computed in log space as ``-logaddexp(log(-log v_i) - log pi_i, log(-log v_b))``, so tiny
    ``pi_i`` neither overflows nor loses the ordering. Differentiable in ``log_pmf`` (reparameterised).
    If ``index`` is drawn from ``pi``, ``z~`` has the law of the unconditional scores ``log pi + g``.

    Args:
        log_pmf: Log-probabilities ``(..., n)`` (normalised here unless ``normalized``; floored with
            :func:`floor_log_pmf`).
        index: The conditioning argmax, ``(...)``, integer.
        uniform: ``v`` of the shape of ``log_pmf`` broadcast with ``index``; drawn if not given.
        normalized: Whether ``log_pmf`` already sums to one in probability space (skips normalising).

    Returns:
        The conditional scores, shape ``(..., n)``.
    """
    if not normalized:
        log_pmf = torch.log_softmax(log_pmf, -1)
    log_pmf = floor_log_pmf(log_pmf)
    shape = torch.broadcast_shapes(log_pmf.shape, index.shape + log_pmf.shape[-1:])
    if uniform is None:
        uniform = sample_uniform(shape, log_pmf.dtype, log_pmf.device)
    log_exp = uniform.log().neg().log()  # log E, E = -log v ~ Exponential(1)
    index = index.unsqueeze(-1).expand(shape[:-1] + (1,))
    log_exp_top = log_exp.gather(-1, index)
    others = -torch.logaddexp(log_exp - log_pmf, log_exp_top)
    chosen = torch.zeros(shape, dtype=torch.bool, device=log_pmf.device).scatter_(-1, index, True)
    return torch.where(chosen, -log_exp_top, others)
