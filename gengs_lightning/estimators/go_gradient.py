"""The GO gradient (Cong et al., ICLR 2019) for count latents, on the window's ordered outcome table."""

from __future__ import annotations

import torch
from torch import Tensor

from gengs_lightning.distributions import COUNT_FAMILIES, TruncatedDiscrete
from gengs_lightning.estimators.base import Objective
from gengs_lightning.estimators.rao_blackwell import RaoBlackwellEstimator, substitute
from gengs_lightning.estimators.registry import register


def cdf_gradient_carrier(log_pmf: Tensor) -> Tensor:
    """A tensor whose gradient is that of the CDF ``Q(k) = sum_{j <= k} q_j`` at every outcome ``k``, ``(..., n)``.

    ``Q(k)`` where ``Q(k) <= 1/2`` and ``-S(k)`` elsewhere, with the survival function
    ``S(k) = sum_{j > k} q_j = 1 - Q(k)``: both have the gradient of ``Q`` and each is computed where it is
    small, as a log-sum-exp of the table (``logcumsumexp`` from the bottom or from the top), so no
    ``1 - Q`` cancels. ``O(n)`` per latent dimension. Its value is not ``Q``; only its gradient is used.
    """
    log_cdf = log_pmf.logcumsumexp(-1)
    floor = torch.full_like(log_pmf[..., :1], torch.finfo(log_pmf.dtype).min / 8)
    above = torch.cat([log_pmf[..., 1:], floor], -1)  # entry k: q_{k+1} (nothing above the top)
    log_sf = above.flip(-1).logcumsumexp(-1).flip(-1)
    return torch.where(log_cdf.detach() <= log_sf.detach(), log_cdf.exp(), -log_sf.exp())


@register
class GOGradient(RaoBlackwellEstimator):
    """The GO gradient (Cong et al., "GO Gradient for Expectation-Based Objectives", ICLR 2019) for count latents.

    For a latent with CDF ``Q(k; theta)`` on ordered outcomes, summation by parts gives (Cong et al.,
    Theorem 1, discrete case)::

        grad E f(z) = E[ sum_d -grad Q_d(z_d) / q_d(z_d) (f(z + e_d) - f(z)) ]

    with ``e_d`` one step up in dimension ``d``; the model's parameters get the pathwise ``grad f(z)``.

    **What it samples from.** The posterior of the prior's family truncated on the window (tails folded
    into the edge outcomes, journal Definition 3), the table GenGS and IndeCateR use, and the KL is the
    closed form between it and the prior truncated on the same window (journal Proposition 6). The
    identity above holds for any distribution on ordered outcomes, so on the table it is exactly unbiased
    for that posterior, for all four count families alike, and its CDF is the cumulative sum of the table
    (no regularised incomplete beta or gamma functions, whose parameter derivatives have no closed form
    for the negative binomial's ``total_count``). With a window wide enough for the tail mass to vanish
    (``trunc_tail_mass`` is logged) it is the untruncated GO gradient; e.g. for a Poisson the weight
    ``-grad_rate Q(k) / q(k)`` is then 1 and the estimate ``E[f(z + 1) - f(z)] grad rate``.

    **The CDF derivative** (:func:`cdf_gradient_carrier`): ``Q`` on the lower half of the mass and
    ``-(1 - Q)`` on the upper half, each a ``logcumsumexp`` of the table's log-pmf (no cancellation),
    differentiated by autograd; ``O(n)`` per latent dimension, ``n`` the window's outcomes.

    **The window's top edge.** At the top outcome ``Q = 1`` whatever the parameters, so its weight is zero
    and ``f(z + e_d)`` is not needed there; ``z + e_d`` is held at the edge (its difference is zero), so no
    configuration leaves the window.

    Cost per step: ``S (1 + D)`` objective evaluations per example in training (the ``S`` draws and one
    forward difference per latent dimension), in **one** call of ``objective`` on an
    ``(S (1 + D), B, D)`` tensor; ``S`` in eval mode.

    Args:
        window: Truncation level ``n`` or window ``[a, b]`` (``None``: see :class:`RaoBlackwellEstimator`).
        num_samples: Independent draws ``S`` per example, averaged.
        tau: Kept for the uniform interface (unused).

    Raises:
        ValueError: For an invalid window, ``num_samples`` or ``tau``.
    """

    unbiased = True
    families = COUNT_FAMILIES

    def _train_forward(
        self, posterior: TruncatedDiscrete, objective: Objective, batch: int
    ) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
        num = self.num_samples
        log_pmf, outcomes, index, sample = self._exact_draws(posterior)  # (B, D, n), (n,), (S, B, D)
        dim, n = log_pmf.shape[1], log_pmf.shape[2]
        up = outcomes[(index + 1).clamp_max(n - 1)]  # one step up, held at the top edge
        configs = torch.cat([sample, substitute(sample, up[..., None])])  # (S + S D, B, D), (s, d) row-major
        values = self._evaluate(objective, configs, batch)
        value = values[:num]  # (S, B)
        shifted = values[num:].reshape(num, dim, batch).transpose(1, 2)  # (S, B, D)
        difference = (shifted - value[..., None]).detach()

        carrier = cdf_gradient_carrier(log_pmf).expand((num,) + log_pmf.shape).gather(-1, index[..., None])[..., 0]
        q = log_pmf.detach().exp().expand((num,) + log_pmf.shape).gather(-1, index[..., None])[..., 0]
        score = -(carrier / q * difference).sum(-1)  # (S, B): grad is the encoder estimate
        estimate = (score + value).mean(0)  # value's grad: the model's pathwise gradient
        return sample, value, estimate, {}
