"""IndeCateR (De Smet et al., NeurIPS 2023): the CatLog-derivative trick on a window's outcome table.

The gradient of ``E_q f(z)`` for a product posterior ``q(z) = prod_d q_d(z_d)`` over ``D`` latent
dimensions, each a table of ``n`` outcomes ``c_1, ..., c_n``, is (De Smet et al. 2023, Theorem 3.2 and
Section 3.3, "Independent Categorical REINFORCE")::

    grad E_q f = sum_d E_{z ~ q} [ sum_k grad q_d(c_k) f(z with z_d = c_k) ]

because the expectation over ``z_d`` of dimension ``d``'s score term is summed exactly (Rao-Blackwellised)
while the other dimensions stay at the draw ``z``. It is unbiased for the posterior it sums over, here the
prior's family truncated on the window (the table GenGS relaxes), and has no temperature.
"""

from __future__ import annotations

from torch import Tensor

from gengs_lightning.distributions import TruncatedDiscrete
from gengs_lightning.estimators.base import Objective
from gengs_lightning.estimators.rao_blackwell import RaoBlackwellEstimator, substitute
from gengs_lightning.estimators.registry import register


@register
class IndeCateR(RaoBlackwellEstimator):
    """IndeCateR (De Smet et al., NeurIPS 2023): per-dimension exact sums over the window's outcomes.

    From "Differentiable Sampling of Categorical Distributions Using the CatLog-Derivative Trick" (the
    authors' code works on categorical latents; here on the count families' windows as well).

    Per sample ``z^s`` (``s = 1..S``, exact draws of the posterior table), per latent dimension ``d`` and
    outcome ``c_k`` of the window, ``F[s, d, k] = f(z^s with z_d = c_k)``; the estimate is::

        encoder:  (1/S) sum_s sum_d sum_k grad q_d(c_k) (F[s, d, k] - f(z^s))
        model:    (1/S) sum_s (1/D) sum_d sum_k q_d(c_k) grad F[s, d, k]

    The baseline ``f(z^s)`` does not depend on ``k``, so it cancels exactly (``sum_k grad q_d(c_k) = 0``);
    it only keeps the summands small. Both are unbiased: for each ``d``, ``z^s_{-d}`` is an exact draw of
    the other dimensions' posteriors and the sum over ``z_d`` is exact. For one latent dimension the
    estimate is the exact gradient (zero variance). The probabilities ``q_d(c_k)`` are differentiated
    directly (not through ``log q``), from the table's log-pmf floored at a finite value.

    Samples from: the posterior of the prior's family truncated on the window (tails folded into the edge
    outcomes, journal Definition 3); ``sample`` holds the ``S`` exact draws ``z^s`` and ``objective`` the
    objective there. KL: closed form between the truncated posterior and the prior truncated on the same
    window (journal Proposition 6), exact and differentiated by autograd.

    Cost per step: ``S n D`` objective evaluations per example in training (``n`` outcomes of the window,
    ``D`` latent dimensions), in **one** call of ``objective`` on an ``(S n D, B, D, *event)`` tensor (the
    draw itself is one of the configurations, so ``f(z^s)`` is read from them); ``S`` in eval mode. Memory
    grows the same way: mind the batch size for wide windows and many latent dimensions.

    Args:
        window: Truncation level ``n`` or window ``[a, b]`` (``None``: see :class:`RaoBlackwellEstimator`).
        num_samples: Independent draws ``S`` per example, averaged.
        tau: Kept for the uniform interface (unused).

    Raises:
        ValueError: For an invalid window, ``num_samples`` or ``tau``.
    """

    unbiased = True

    def _train_forward(
        self, posterior: TruncatedDiscrete, objective: Objective, batch: int
    ) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
        num = self.num_samples
        log_pmf, outcomes, index, sample = self._exact_draws(posterior)  # (B, D, n), (n, *event), (S, B, D)
        dim, n = log_pmf.shape[1], log_pmf.shape[2]
        alternatives = outcomes.expand((num, batch, dim) + outcomes.shape)  # (S, B, D, n, *event)
        configs = substitute(sample, alternatives)  # (S * D * n, B, D, *event), row-major (s, d, k)
        values = self._evaluate(objective, configs, batch).reshape(num, dim, n, batch).permute(0, 3, 1, 2)
        # f(z^s): the configuration of dimension 0 at its own draw.
        value = values[:, :, 0].gather(-1, index[:, :, :1]).squeeze(-1)  # (S, B)

        pmf = log_pmf.exp()  # (B, D, n)
        centred = (values - value[:, :, None, None]).detach()  # (S, B, D, n)
        score = (pmf * centred).sum((-1, -2))  # (S, B): grad is the encoder estimate
        model = (pmf.detach() * values).sum(-1).mean(-1)  # (S, B): grad is the model estimate
        estimate = (score + model).mean(0)
        return sample, value, estimate, {}
