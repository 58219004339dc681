"""The relaxed GenGS sample ``z = sum_k c_k softmax((log pi + g) / tau)_k`` and its distribution."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor
from torch.distributions import Distribution, constraints

from gengs_lightning.distributions.gumbel import sample_gumbel, with_samples
from gengs_lightning.distributions.truncated import TruncatedDiscrete


class _RelaxedOutcome(torch.autograd.Function):
    """``z = w @ c`` with ``w = softmax((logits + g) / tau)``, differentiated in closed form.

    With ``y = (logits + g) / tau`` and upstream gradient ``u``, let ``p_k = (c_k - z) . u``. Then
    ``dL/dlogits = w * p / tau`` (the softmax Jacobian) and, because these sum to zero over ``k`` and
    ``log w = y - logsumexp(y)``, ``dL/dtau = -sum_k (dL/dlogits)_k log w_k``. Only ``w`` and the soft
    ``z`` are kept for backward: no intermediate of the softmax or of the noise. In hard mode
    (straight-through) the forward value is the outcome at ``argmax y`` and the backward pass is the
    relaxed one.
    """

    @staticmethod
    def forward(ctx, logits: Tensor, tau: Tensor, outcomes: Tensor, gumbel: Tensor, hard: bool) -> Tensor:
        scores = gumbel.add_(logits).div_(tau)
        weights = torch.softmax(scores, dim=-1)
        soft = weights @ outcomes
        ctx.save_for_backward(weights, soft, outcomes, tau)
        if hard:
            return outcomes[scores.argmax(-1)]
        return soft

    @staticmethod
    def backward(ctx, grad: Tensor):
        weights, soft, outcomes, tau = ctx.saved_tensors
        if outcomes.dim() == 1:
            scale = (grad / tau.squeeze(-1) if tau.dim() else grad / tau).unsqueeze(-1)
            grad_logits = torch.addcmul(-(soft.unsqueeze(-1) * scale), scale, outcomes)
        else:
            projected = grad @ outcomes.T - (grad * soft).sum(-1, keepdim=True)
            grad_logits = projected.div_(tau)
        grad_logits.mul_(weights)
        grad_tau = None
        if ctx.needs_input_grad[1]:
            log_weights = weights.clamp_min(torch.finfo(weights.dtype).tiny).log_()
            grad_tau = -(grad_logits * log_weights).sum(-1, keepdim=True).sum_to_size(tau.shape)
        return grad_logits, grad_tau, None, None, None


def relaxed_outcome(
    logits: Tensor,
    outcomes: Tensor,
    tau: Tensor | float,
    hard: bool = False,
    gumbel: Tensor | None = None,
) -> Tensor:
    """Draw a GenGS sample ``T(GS(pi, tau)) = sum_k c_k w_k`` (NeurIPS Theorem 4, journal Prop. 2).

    Args:
        logits: Log-PMF ``log pi`` (normalisation is irrelevant), shape ``(..., n)``.
        outcomes: Outcome table ``c`` of shape ``(n,)`` or ``(n, K)``.
        tau: Positive temperature, a float or a tensor broadcastable to ``(...)``; differentiable.
        hard: Return the discrete outcome ``c[argmax]`` forward, relaxed gradient backward.
        gumbel: Gumbel noise of the shape of ``logits``; drawn if not given (it is overwritten).

    Returns:
        The relaxed value, shape ``(...)`` or ``(..., K)``.
    """
    tau = torch.as_tensor(tau, dtype=logits.dtype, device=logits.device)
    if tau.dim() > 0:
        tau = tau.unsqueeze(-1)
    if gumbel is None:
        gumbel = sample_gumbel(logits.shape, logits.dtype, logits.device)
    else:
        gumbel = gumbel.clone()
    return _RelaxedOutcome.apply(logits, tau, outcomes.to(logits.dtype), gumbel, hard)


class GenGS(Distribution):
    """The Generalized Gumbel-Softmax distribution ``GenGS(pi, tau) = T(GS(pi, tau))``.

    Relaxes a :class:`TruncatedDiscrete` (a truncated count family, a categorical, a multinomial or an
    implicit posterior): ``z = sum_k c_k softmax((log pi + g) / tau)_k`` with Gumbel noise ``g``
    (NeurIPS Section 3.2 and Theorem 4). As ``tau -> 0`` the sample converges to a draw of the
    truncated distribution; with ``hard=True`` it *is* such a draw and only the gradient is relaxed
    (straight-through, NeurIPS Section 4.2).

    Args:
        base: The discrete table to relax.
        temperature: Positive temperature ``tau``: a float or a tensor broadcastable to the batch shape.
        hard: Straight-through: discrete forward value, relaxed gradient.
        validate_args: Whether to check that the temperature is positive.

    Raises:
        ValueError: If the temperature is not positive (when validating).
    """

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {"temperature": constraints.positive}
    has_rsample = True

    def __init__(
        self,
        base: TruncatedDiscrete,
        temperature: Tensor | float,
        hard: bool = False,
        validate_args: bool | None = None,
    ):
        self.base = base
        self.temperature = torch.as_tensor(temperature, dtype=base.log_pmf.dtype, device=base.log_pmf.device)
        self.hard = hard
        super().__init__(base.batch_shape, base.event_shape, validate_args=validate_args)

    @property
    def support(self) -> constraints.Constraint:
        low, high = self.base.outcomes.min().item(), self.base.outcomes.max().item()
        if self.base.outcomes.dim() == 1:
            return constraints.interval(low, high)
        return constraints.independent(constraints.interval(low, high), 1)

    def expand(self, batch_shape, _instance=None) -> GenGS:
        return GenGS(self.base.expand(batch_shape), self.temperature, self.hard, validate_args=False)

    def rsample(self, sample_shape: torch.Size | tuple[int, ...] = torch.Size()) -> Tensor:
        logits = with_samples(self.base.log_pmf, sample_shape)
        return relaxed_outcome(logits, self.base.outcomes, self.temperature, self.hard)

    def log_prob(self, value: Tensor) -> Tensor:
        """Not available: the density of a linear map of a Concrete variable has no closed form."""
        raise NotImplementedError(
            "GenGS has no closed-form density; use the KL between the truncated distributions "
            "(journal Proposition 6) or the base distribution's log_prob on discrete values"
        )

    def __repr__(self) -> str:
        tau = self.temperature.item() if self.temperature.numel() == 1 else "tensor"
        return f"GenGS(n={self.base.num_outcomes}, tau={tau}, hard={self.hard})"
