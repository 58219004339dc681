"""Toy problems, exact enumeration and Monte Carlo gradient draws for the score-function estimator tests.

Everything here is float64. Exact values enumerate every latent configuration of a ``D = 2`` problem on
a finite table: the untruncated family on a window holding ``1 - 1e-12`` of each posterior's mass (the
package's ``widen``; the mass beyond moves expectations by ~1e-12), or the truncated table itself.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.distributions import kl_divergence

from gengs_lightning.distributions import Prior, TruncatedDiscrete, Window

#: Encoder outputs of the Poisson problem, ``(B, D, 1) = (4, 2, 1)``: rates softplus(raw) from ~0.6 to ~4.
POISSON_RAW = [[[0.0], [1.5]], [[3.0], [0.5]], [[-0.5], [2.0]], [[1.0], [4.0]]]
#: Targets ``t`` of the Poisson problem, ``(B, D)``.
POISSON_TARGETS = [[1.0, 3.0], [4.0, 0.0], [0.0, 2.0], [2.0, 5.0]]
#: Class logits of the categorical problem, ``(B, D, K) = (4, 2, 3)``, and its targets.
CATEGORICAL_RAW = [
    [[0.0, 1.0, -1.0], [0.5, 0.0, 0.2]],
    [[2.0, -1.0, 0.0], [-0.5, 1.5, 0.3]],
    [[0.0, 0.0, 0.0], [1.0, -2.0, 1.0]],
    [[-1.0, 0.5, 1.5], [0.3, 0.3, -1.0]],
]
CATEGORICAL_TARGETS = [[1.0, 3.0], [4.0, 0.0], [0.0, 2.0], [2.0, 5.0]]
#: Value of each class in the categorical objective.
CLASS_VALUES = [0.0, 2.0, 5.0]


class ToyObjective:
    """``f(z) = sum_d (x_d - t_d)^2 + x_1 x_2 / 2`` per example, with ``x = z`` or ``x = z @ values`` (one-hot).

    The cross term makes the two latent dimensions interact. ``t`` has shape ``(N, D)`` and ``z``
    ``(S, N, D, *event)``; real-valued ``z`` are accepted (MuProp evaluates the mean).
    """

    def __init__(self, targets: Tensor, values: Tensor | None = None):
        self.targets = targets
        self.values = values

    def __call__(self, z: Tensor) -> Tensor:
        x = z if self.values is None else z @ self.values.to(z)
        t = self.targets.to(x)
        return (x - t).square().sum(-1) + 0.5 * x[..., 0] * x[..., 1]

    def repeat(self, num: int) -> ToyObjective:
        """The objective of the batch repeated ``num`` times (``torch.repeat`` order)."""
        return ToyObjective(self.targets.repeat(num, 1), self.values)


def problem(family: str) -> tuple[Prior, Tensor, ToyObjective]:
    """Prior, encoder output ``(4, 2, raw_size)`` and objective of the Poisson or categorical problem."""
    if family == "poisson":
        prior = Prior("poisson", {"rate": 2.0}).double()
        raw = torch.tensor(POISSON_RAW, dtype=torch.float64)
        return prior, raw, ToyObjective(torch.tensor(POISSON_TARGETS, dtype=torch.float64))
    prior = Prior("categorical", {"probs": [0.5, 0.3, 0.2]}).double()
    raw = torch.tensor(CATEGORICAL_RAW, dtype=torch.float64)
    values = torch.tensor(CLASS_VALUES, dtype=torch.float64)
    return prior, raw, ToyObjective(torch.tensor(CATEGORICAL_TARGETS, dtype=torch.float64), values)


def gradient_draws(estimator, raw: Tensor, objective: ToyObjective, prior: Prior, kl: bool, num: int) -> Tensor:
    """``num`` independent estimates of ``d loss_b / d raw_b`` per example, ``(num, B, D, R)``, in one call.

    The batch is replicated ``num`` times (examples are independent); the surrogate is a mean over the
    ``num * B`` examples, so ``num * B`` times its gradient for one replica is one draw.
    """
    batch = raw.shape[0]
    replicas = raw.detach().repeat(num, 1, 1).requires_grad_()
    out = estimator(replicas, objective.repeat(num), prior, kl=kl)
    (grad,) = torch.autograd.grad(out.surrogate * (num * batch), [replicas])
    return grad.reshape(num, *raw.shape)


def exact_table(prior: Prior, raw: Tensor, truncated: bool, window: Window | None = None) -> TruncatedDiscrete:
    """The posterior as a finite table, differentiable in ``raw``: the truncated one, or the widened family."""
    if truncated:
        return prior.posterior(raw, prior.resolve_window(window))
    if prior.family.truncatable:
        return prior.posterior(raw, Window(0, 0)).widen(1e-12)
    return prior.posterior(raw, None)


def configurations(table: TruncatedDiscrete) -> tuple[Tensor, Tensor]:
    """Every ``(z_1, z_2)`` of a ``D = 2`` table: values ``(N, 2, *event)`` and log-probabilities ``(B, N)``."""
    n = table.num_outcomes
    index = torch.cartesian_prod(torch.arange(n), torch.arange(n))  # (N, 2)
    values = table.outcomes[index]
    log_pmf = table.log_pmf  # (B, 2, n)
    log_joint = log_pmf[:, 0, index[:, 0]] + log_pmf[:, 1, index[:, 1]]
    return values, log_joint


def exact_loss(prior: Prior, raw: Tensor, objective: ToyObjective, kl: bool, truncated: bool, window=None) -> Tensor:
    """``E_q f + KL`` per example ``(B,)`` by enumeration (KL of the tables on one window)."""
    table = exact_table(prior, raw, truncated, window)
    values, log_joint = configurations(table)
    f = objective(values.unsqueeze(1).expand(-1, raw.shape[0], *values.shape[1:]))  # (N, B)
    loss = (log_joint.exp() * f.T).sum(-1)
    if kl:
        loss = loss + kl_divergence(table, prior.truncated(table.window)).sum(-1)
    return loss


def exact_score_and_kl_gradients(prior, raw, objective, truncated, window=None) -> tuple[Tensor, Tensor]:
    """``d E_q f / d raw`` and ``d KL / d raw`` per example, separately."""
    leaf = raw.detach().requires_grad_()
    (score,) = torch.autograd.grad(exact_loss(prior, leaf, objective, False, truncated, window).sum(), [leaf])
    table = exact_table(prior, leaf, truncated, window)
    (kl,) = torch.autograd.grad(kl_divergence(table, prior.truncated(table.window)).sum(), [leaf])
    return score, kl


def exact_vimco_loss(
    prior: Prior, raw: Tensor, objective: ToyObjective, kl: bool, num_samples: int, truncated: bool, window=None
) -> Tensor:
    """``-E[log (1/S) sum_s w_s]`` per example ``(B,)`` by enumerating all ``S``-tuples of configurations.

    ``log w = -f(z) + log p(z) - log q(z)`` with ``kl`` (``p`` the untruncated prior's pmf, or the prior
    truncated on the window), ``-f(z)`` without.
    """
    table = exact_table(prior, raw, truncated, window)
    values, log_q = configurations(table)  # (N, 2, *event), (B, N)
    batch = raw.shape[0]
    log_w = -objective(values.unsqueeze(1).expand(-1, batch, *values.shape[1:])).T  # (B, N)
    if kl:
        if truncated:
            prior_table = prior.truncated(table.window)
            log_p_dim = prior_table.log_prob(values)  # (N, 2)
        else:
            log_p_dim = prior.untruncated().log_prob(values)
        log_w = log_w + log_p_dim.sum(-1) - log_q
    total_w, total_q = log_w, log_q
    for _ in range(num_samples - 1):
        total_w = torch.logaddexp(total_w[:, :, None], log_w[:, None, :]).flatten(1)
        total_q = (total_q[:, :, None] + log_q[:, None, :]).flatten(1)
    bound = total_w - math.log(num_samples)
    return -(total_q.exp() * bound).sum(-1)


def exact_gradient(loss_fn, raw: Tensor) -> Tensor:
    """``d loss_b / d raw_b`` for a per-example ``loss_fn(raw) -> (B,)``."""
    leaf = raw.detach().requires_grad_()
    (grad,) = torch.autograd.grad(loss_fn(leaf).sum(), [leaf])
    return grad


def z_scores(draws: Tensor, exact: Tensor) -> Tensor:
    """``(mean - exact) / standard error`` per coordinate, from draws ``(M, *shape)``."""
    mean = draws.mean(0)
    error = draws.std(0) / math.sqrt(draws.shape[0])
    return (mean - exact) / error


def variance_and_error(draws: Tensor) -> tuple[float, float]:
    """Total variance ``sum_p Var[g_p]`` of draws ``(M, ...)`` and its standard error.

    The error of one coordinate's sample variance is ``sqrt((m4 - s^4) / M)`` (fourth central moment),
    the coordinates' errors are added (not in quadrature: they are correlated).
    """
    flat = draws.reshape(draws.shape[0], -1)
    centred = flat - flat.mean(0)
    var = centred.square().mean(0)
    m4 = centred.pow(4).mean(0)
    error = ((m4 - var.square()).clamp_min(0) / flat.shape[0]).sqrt()
    return float(var.sum()), float(error.sum())
