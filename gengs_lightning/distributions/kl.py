"""Closed-form KL divergence between two tables on the same outcomes (journal Proposition 6)."""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.distributions import register_kl

from gengs_lightning.distributions.truncated import TruncatedDiscrete


def _same_outcomes(p: TruncatedDiscrete, q: TruncatedDiscrete) -> bool:
    if p.window is not None and q.window is not None:
        return p.window == q.window
    return p.outcomes.shape == q.outcomes.shape and bool(torch.equal(p.outcomes, q.outcomes.to(p.outcomes)))


@register_kl(TruncatedDiscrete, TruncatedDiscrete)
def kl_truncated_truncated(p: TruncatedDiscrete, q: TruncatedDiscrete) -> Tensor:
    """``KL(p || q) = sum_k pi^p_k (log pi^p_k - log pi^q_k)`` over one shared outcome table.

    Two truncations of count families on the same window are categorical distributions over the same
    outcomes, so their KL is the categorical KL (journal Proposition 6). Terms with ``pi^p_k = 0``, or
    below ``e`` times the dtype's smallest normal number, contribute zero, with a zero gradient.

    Raises:
        ValueError: If the two tables do not enumerate the same outcomes.
    """
    if not _same_outcomes(p, q):
        raise ValueError(
            f"KL between truncated distributions needs one window: got {p.window or p.outcomes.shape} "
            f"and {q.window or q.outcomes.shape}"
        )
    return _TableKL.apply(p.log_pmf, q.log_pmf)


class _TableKL(torch.autograd.Function):
    """``sum_k exp(lp_k) (lp_k - lq_k)`` with ``d/d lp_k = p_k (lp_k - lq_k + 1)`` and ``d/d lq_k = -p_k``.

    Terms with ``p_k < e * tiny`` (``tiny`` the dtype's smallest normal number) count as zero: their share
    of the sum is below its precision, and on CPU ``exp`` with a subnormal or zero result, and arithmetic on
    subnormals, run 25-70x slower than on normal numbers, so a wide table's far tail would cost most of
    the KL's time. The margin ``e`` keeps ``exp`` of the floor itself normal.
    """

    @staticmethod
    def forward(ctx, log_p: Tensor, log_q: Tensor) -> Tensor:
        floor = math.log(torch.finfo(log_p.dtype).tiny) + 1.0
        negligible = log_p < floor
        p = log_p.clamp_min(floor).exp_().masked_fill_(negligible, 0.0)
        log_ratio = (log_p - log_q).masked_fill_(negligible, 0.0)
        ctx.save_for_backward(p, log_ratio)
        ctx.q_shape = log_q.shape
        return torch.linalg.vecdot(p, log_ratio)

    @staticmethod
    def backward(ctx, grad: Tensor):
        p, log_ratio = ctx.saved_tensors
        grad = grad.unsqueeze(-1)
        grad_p = grad_q = None
        if ctx.needs_input_grad[0]:
            grad_p = (log_ratio + 1.0).mul_(p).mul_(grad).sum_to_size(p.shape)
        if ctx.needs_input_grad[1]:
            grad_q = (-p * grad).sum_to_size(ctx.q_shape)
        return grad_p, grad_q
