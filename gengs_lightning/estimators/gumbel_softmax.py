"""The plain Gumbel-Softmax estimator over a window's outcome table: the reference point of the comparison."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from gengs_lightning.distributions import TruncatedDiscrete, with_samples
from gengs_lightning.estimators.registry import register
from gengs_lightning.estimators.windowed import RelaxedEstimator


@register
class GumbelSoftmax(RelaxedEstimator):
    """The plain Gumbel-Softmax (Jang et al. 2017; Maddison et al. 2017) over the window's outcome table.

    The encoder outputs the ``n`` logits of a free categorical over the outcomes ``c`` of the prior
    truncated on the window (``n`` = window size, or the number of outcomes of a categorical or
    multinomial table). Training samples are ``torch.nn.functional.gumbel_softmax(logits, tau)`` mapped to
    values ``z = sum_k w_k c_k``; for a categorical prior with one-hot outcomes ``z = w`` is exactly the
    Gumbel-Softmax / Concrete relaxation. With ``hard=True`` (straight-through) the forward value is the
    outcome at ``argmax w`` and the gradient that of the relaxed value, as ``gumbel_softmax(hard=True) @ c``
    (which equals ``c[argmax]`` only up to one rounding; here the outcome is returned exactly). In eval
    mode samples are exact draws of the categorical. The KL is the closed-form categorical KL between the
    posterior and the prior truncated on the same window (journal Proposition 6), as for GenGS.

    This is :class:`~gengs_lightning.estimators.GenGSImplicit` up to implementation: the same table, the
    same relaxed distribution and the same KL, but torch's reference relaxation (its own Gumbel noise,
    softmax and autograd) instead of GenGS's noise and closed-form backward pass. It is the reference point
    of the comparison.

    Args:
        window: Truncation level ``n`` or window ``[a, b]``; ``None`` takes the whole support of finite
            families and otherwise the smallest window holding ``1 - 1e-6`` of the prior.
        num_samples: Latent samples per example.
        tau: Initial temperature.
        hard: Straight-through: discrete forward values, relaxed gradients.

    Raises:
        ValueError: For an invalid window, temperature, number of samples or a non-boolean ``hard``.
    """

    implicit = True

    def relaxed_sample(self, posterior: TruncatedDiscrete, params: Tensor) -> Tensor:
        """``torch.nn.functional.gumbel_softmax`` of the logits, mapped to values ``w @ c``."""
        outcomes = posterior.outcomes
        weights = F.gumbel_softmax(with_samples(params, (self.num_samples,)), tau=self.tau, hard=False, dim=-1)
        soft = weights @ outcomes
        return outcomes[weights.argmax(-1)] + (soft - soft.detach()) if self.hard else soft
