"""The synthetic task of the GenGS paper (NeurIPS Section 6.1, Figure 3)."""

from __future__ import annotations

from functools import partial

import torch
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from gengs_lightning.checks import check_int
from gengs_lightning.distributions import Prior
from gengs_lightning.estimators import Estimator
from gengs_lightning.models.base import DiscreteLatentModule
from gengs_lightning.models.gradients import gradient_statistics
from gengs_lightning.models.toy_summary import toy_summary


class ToyTask(DiscreteLatentModule):
    """Minimise ``E_{z ~ D(lambda)} [(z_i - t_i)^2]`` over ``lambda`` for fixed targets ``t_i ~ D(theta)``.

    One latent per target, all sharing the learnable parameter; the targets come as the batch
    (:class:`~gengs_lightning.data.ToyTargets` draws them once from ``target``). The loss is the mean
    over targets (the paper's sum divided by the number of targets), with vector outcomes (multinomial)
    summed over components. The learnable parameter is the estimator's unconstrained encoder output
    (e.g. ``softplus^-1(rate)`` for explicit GenGS, the ``n`` logits for implicit GenGS).

    Besides the base class's scalars it logs ``train/mean`` (mean of the current posterior) every step
    and, every ``grad_every`` steps, ``train/grad_var`` (total variance of the gradient over
    ``grad_draws`` independent estimates), ``train/grad_bias`` (distance of their mean to the exact
    gradient), ``train/grad_bias_stderr`` and ``train/exact_loss``. Exact values enumerate the
    untruncated family on a window holding ``1 - 1e-12`` of its mass (for Poisson this equals the
    closed form ``lambda + (lambda - t)^2``, which the tests check).

    Args:
        estimator: The gradient estimator.
        target: ``D(theta)``: the family of the latents and the distribution of the targets, e.g.
            ``Prior("poisson", {"rate": 20.0})``.
        init: Initial free parameters of ``D(lambda)`` (e.g. ``{"rate": 5.0}``); structural ones come
            from ``target``. ``None`` starts from a zero encoder output.
        grad_every: Steps between gradient statistics (0 turns them off).
        grad_draws: Independent gradient draws ``M`` per statistic.
        optimizer: Optimizer factory.
        lr_scheduler: Optional learning-rate scheduler factory.

    Raises:
        ValueError: For a ``grad_every`` that is not an integer >= 0 or a ``grad_draws`` that is not one >= 2.
    """

    uses_kl = False

    def __init__(
        self,
        estimator: Estimator,
        target: Prior,
        init: dict[str, float | list[float]] | None = None,
        grad_every: int = 100,
        grad_draws: int = 100,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
    ):
        super().__init__(estimator, target, optimizer, lr_scheduler)
        self.save_hyperparameters()
        self.grad_every = check_int("grad_every", grad_every, 0, meaning="0 turns gradient statistics off")
        self.grad_draws = check_int("grad_draws", grad_draws, 2)
        raw_size = estimator.raw_size(target)
        if init is None:
            raw = torch.zeros(raw_size)
        else:
            start = Prior(target.family.family_name, {**target.structural, **init})
            raw = estimator.raw_like(start).reshape(raw_size).detach()
        self.raw = nn.Parameter(raw)

    @property
    def target(self) -> Prior:
        """The target distribution ``D(theta)``."""
        return self.prior

    def encode(self, batch: Tensor) -> Tensor:
        return self.raw.expand(batch.shape[0], 1, self.raw.shape[0])

    def objective(self, batch: Tensor, z: Tensor) -> Tensor:
        squared = (z[:, :, 0] - batch).square()
        return squared.reshape(squared.shape[0], squared.shape[1], -1).sum(-1)

    def exact_loss(self, batch: Tensor) -> Tensor:
        """``mean_i E_{z ~ D(lambda)} (z - t_i)^2`` by enumeration, differentiable in the parameter."""
        wide = self.estimator.posterior(self.encode(batch), self.prior).widen()
        losses = self.objective(batch, wide.enumerate_support())
        return (wide.pmf[:, 0, :].T * losses).sum(0).mean()

    def summary(self) -> dict[str, float]:
        """The learned distribution, its exact loss on the data's targets and the optimum (:func:`toy_summary`)."""
        return toy_summary(self, getattr(self.trainer.datamodule, "targets", None))

    def training_step(self, batch: Tensor, batch_idx: int) -> Tensor:
        if self.grad_every and self.global_step % self.grad_every == 0 and self.trainer.is_global_zero:
            # before the step's own forward pass: measuring restores the estimator's state in place
            self.log_now({f"train/{name}": value for name, value in self.gradient_statistics(batch).items()})
        surrogate = super().training_step(batch, batch_idx)
        if not self._logging_step():
            return surrogate
        with torch.no_grad():
            mean = self.estimator.posterior(self.encode(batch[:1]), self.prior).mean.reshape(-1)
        names = ["train/mean"] if mean.numel() == 1 else [f"train/mean_{j}" for j in range(mean.numel())]
        for name, value in zip(names, mean.float(), strict=True):
            self.log(name, value, batch_size=batch.shape[0])
        return surrogate

    def gradient_draws(self, batch: Tensor, num_draws: int) -> Tensor:
        """``num_draws`` independent gradient estimates with respect to the parameter, ``(M, raw_size)``.

        The base class's draws (:meth:`DiscreteLatentModule.gradient_draws`: the parameter is the whole
        encoder) computed in one pass, in the parameter's dtype: the parameter is replicated ``M`` times,
        each replica sees the whole target vector, and since the surrogate is a mean over the ``M * K``
        examples, the gradient of ``M`` times it with respect to replica ``m`` is draw ``m``.
        """
        with self.estimator_state_kept(), torch.enable_grad():
            replicas = self.raw.detach().expand(num_draws, -1).clone().requires_grad_()
            size = batch.shape[0]
            params = replicas[:, None, None, :].expand(-1, size, 1, -1).reshape(num_draws * size, 1, -1)
            targets = batch.repeat(num_draws, *([1] * (batch.dim() - 1)))
            out = self.run_estimator(params, partial(self.objective, targets), kl=False)
            (draws,) = torch.autograd.grad(out.surrogate * num_draws, [replicas])
        return draws

    def gradient_statistics(self, batch: Tensor) -> dict[str, Tensor]:
        """Variance and bias of the estimator's gradient with respect to the learnable parameter."""
        draws = self.gradient_draws(batch, self.grad_draws)
        with torch.enable_grad():
            exact_loss = self.exact_loss(batch)
            (exact,) = torch.autograd.grad(exact_loss, [self.raw])
        return {**gradient_statistics(draws, exact), "exact_loss": exact_loss.detach()}
