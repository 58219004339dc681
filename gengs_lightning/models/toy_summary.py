"""What a finished toy run reports: the learned distribution, its exact loss, and the family's optimum.

The optimum is the member of the family closest, in expected squared error, to the targets. The loss of
:class:`~gengs_lightning.models.ToyTask` for the untruncated family is
``L = mean_i E_{z ~ D(lambda)} ||z - t_i||^2 = sum_j [Var z_j + (E z_j - mean(t)_j)^2] + const``. The
count families here have ``Var z = m + c m^2`` in their mean ``m`` (``c = 0`` Poisson, ``1`` geometric,
``1 / r`` negative binomial, ``-1 / n`` binomial), so ``L`` is minimised at
``m = (2 mean(t) - 1) / (2 (1 + c))``, the Poisson's ``rate = mean(t) - 1/2`` (kept in the family's range).
For the multinomial, ``L = n (n - 1) ||p - q||^2 + const`` with ``q = (2 mean(t) - 1) / (2 (n - 1))``, so
the optimum is the projection of ``q`` onto the probability simplex. Other cases (categorical, one
trial) have no closed form here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from gengs_lightning.distributions import Prior

if TYPE_CHECKING:
    from gengs_lightning.models.toy import ToyTask


def project_to_simplex(q: Tensor) -> Tensor:
    """The Euclidean projection of a vector onto ``{p : p >= 0, sum p = 1}`` (sort-based, exact)."""
    ordered, _ = torch.sort(q, descending=True)
    excess = ordered.cumsum(0) - 1.0
    ranks = torch.arange(1, q.numel() + 1, dtype=q.dtype, device=q.device)
    support = int((ordered - excess / ranks > 0).sum())
    return (q - excess[support - 1] / support).clamp_min(0.0)


def toy_optimum(target: Prior, targets: Tensor) -> dict[str, Tensor] | None:
    """The family's free parameters that minimise the toy loss for ``targets``, or ``None`` without a closed form.

    Args:
        target: The toy task's target distribution; its family and structural parameters are kept.
        targets: The targets ``(K,)`` (counts) or ``(K, classes)`` (multinomial).

    Returns:
        The free parameters by name (``rate`` or ``probs``), in float64.
    """
    family = target.family.family_name
    mean = targets.double().mean(0)
    count = target.structural.get("total_count")
    if family == "poisson":
        return {"rate": (mean - 0.5).clamp_min(0.0)}
    if family == "geometric":  # Var = m (1 + m); torch's geometric has mean (1 - p) / p
        return {"probs": 1.0 / (1.0 + ((2.0 * mean - 1.0) / 4.0).clamp_min(0.0))}
    if family == "negative_binomial":  # Var = m (1 + m / r); mean r p / (1 - p)
        m = (count * (2.0 * mean - 1.0) / (2.0 * (count + 1.0))).clamp_min(0.0)
        return {"probs": m / (count + m)}
    if family in ("binomial", "multinomial") and count >= 2:
        q = (2.0 * mean - 1.0) / (2.0 * (count - 1))
        return {"probs": q.clamp(0.0, 1.0) if family == "binomial" else project_to_simplex(q)}
    return None


def toy_loss(target: Prior, params: dict[str, Tensor], targets: Tensor) -> Tensor:
    """``mean_i E ||z - t_i||^2`` for ``z`` from the untruncated family with free parameters ``params``."""
    distribution = target.family.untruncated(**target.structural, **params)
    squared = distribution.variance + (distribution.mean - targets.double()).square()
    return squared.reshape(targets.shape[0], -1).sum(-1).mean()


def scalar_rows(values: dict[str, Tensor]) -> dict[str, float]:
    """One row per number: ``name`` for a scalar, ``name[j]`` for each entry of a vector."""
    rows = {}
    for name, value in values.items():
        flat = torch.as_tensor(value).detach().double().flatten().tolist()
        rows.update({name: flat[0]} if len(flat) == 1 else {f"{name}[{j}]": x for j, x in enumerate(flat)})
    return rows


@torch.no_grad()
def toy_summary(model: ToyTask, targets: Tensor | None) -> dict[str, float]:
    """The summary of a toy run: the learned distribution, and with the targets its exact loss and the optimum.

    The learned distribution shows as the family's free parameters when the estimator's posterior is a member
    of the target's family (explicit inference, e.g. ``rate``), else as the posterior's mean (e.g. implicit
    inference's free table on the window). The exact loss is :meth:`ToyTask.exact_loss`; the optimum, and the
    exact loss there, are the untruncated family's (:func:`toy_optimum`), shown where it has a closed form.

    Args:
        model: The toy task.
        targets: Its targets, or ``None`` when they are not known (then only the learned distribution).
    """
    target = model.target
    posterior = model.estimator.posterior(model.raw.expand(1, 1, -1), target)
    free = [name for name in target.params if name not in target.structural]
    if isinstance(posterior, target.family):
        rows = scalar_rows({name: getattr(posterior, name) for name in free})
    else:
        rows = scalar_rows({"posterior mean": posterior.mean})
    if targets is None:
        return rows
    targets = targets.to(model.raw.device)
    rows["exact loss"] = float(model.exact_loss(targets))
    optimum = toy_optimum(target, targets)
    if optimum is not None:
        rows.update(scalar_rows({f"optimum {name}": value for name, value in optimum.items()}))
        rows["exact loss at optimum"] = float(toy_loss(target, optimum, targets))
    return rows
