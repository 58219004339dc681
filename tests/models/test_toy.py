"""The toy task (NeurIPS Section 6.1): exact loss and gradient, gradient statistics, initialisation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gengs_lightning.data import ToyTargets
from gengs_lightning.distributions import Prior, TruncatedPoisson
from gengs_lightning.estimators import GenGSExplicit, GenGSImplicit
from gengs_lightning.models import DiscreteLatentModule, ToyTask


def poisson_task(rate: float = 12.0, tau: float = 0.5, estimator=None) -> tuple[ToyTask, torch.Tensor]:
    estimator = estimator or GenGSExplicit(window=60, tau=tau)
    task = ToyTask(estimator, Prior("poisson", {"rate": 20.0}), init={"rate": rate})
    targets = ToyTargets.draw(task.target.untruncated(), 100, seed=0)
    return task, targets


def test_exact_loss_and_gradient_match_the_poisson_closed_form():
    task, targets = poisson_task(rate=12.0)
    rate = F.softplus(task.raw).item()
    assert rate == pytest.approx(12.0, rel=1e-6)
    exact = task.exact_loss(targets)
    closed_form = (rate + (rate - targets) ** 2).mean()  # E (z - t)^2 = Var z + (E z - t)^2
    assert exact.item() == pytest.approx(closed_form.item(), rel=1e-6)
    (gradient,) = torch.autograd.grad(exact, [task.raw])
    closed_gradient = (1 + 2 * (rate - targets.mean())) * torch.sigmoid(task.raw.detach())
    assert gradient.item() == pytest.approx(closed_gradient.item(), rel=1e-5)


@pytest.mark.parametrize(
    ("family", "params", "init"),
    [
        ("binomial", {"total_count": 20, "probs": 0.3}, {"probs": 0.5}),
        ("negative_binomial", {"total_count": 3.0, "probs": 0.4}, {"probs": 0.6}),
    ],
)
def test_exact_loss_matches_enumeration_with_torch_distributions(family, params, init):
    task = ToyTask(GenGSExplicit(window=None if family == "binomial" else 80), Prior(family, params), init=init)
    targets = ToyTargets.draw(task.target.untruncated(), 50, seed=1)
    untruncated = Prior(family, {**params, **init}).untruncated()
    k = torch.arange(0, 400.0) if family != "binomial" else torch.arange(0, 21.0)
    pmf = untruncated.log_prob(k).exp()
    expected = (pmf[:, None] * (k[:, None] - targets) ** 2).sum(0).mean()
    assert task.exact_loss(targets).item() == pytest.approx(expected.item(), rel=1e-5)


def _gradient_bias(task: ToyTask, targets: torch.Tensor, draws: int, chunk: int = 2000) -> tuple[float, float]:
    """Mean gradient minus the exact one, and its standard error, from ``draws`` independent draws."""
    samples = torch.cat([task.gradient_draws(targets, chunk)[:, 0] for _ in range(draws // chunk)])
    (exact,) = torch.autograd.grad(task.exact_loss(targets), [task.raw])
    return (samples.mean() - exact[0]).item(), (samples.std() / samples.numel() ** 0.5).item()


@pytest.mark.slow
def test_gradient_bias_against_the_exact_poisson_gradient_shrinks_with_tau():
    torch.manual_seed(0)
    biases = []
    for tau in (1.0, 0.3, 0.1):
        task, targets = poisson_task(rate=15.0, tau=tau)
        biases.append(_gradient_bias(task, targets, draws=16_000))
    for (bias, error), (smaller, smaller_error) in zip(biases, biases[1:], strict=False):
        # Each step down in tau reduces |bias| by more than 3 combined standard errors.
        assert abs(bias) - abs(smaller) > 3 * (error**2 + smaller_error**2) ** 0.5, biases
    # ...and at tau = 1 the bias is real (far outside the Monte Carlo error), so the check has teeth.
    assert abs(biases[0][0]) > 10 * biases[0][1]


def test_one_pass_gradient_draws_match_independent_calls():
    torch.manual_seed(0)
    task, targets = poisson_task(rate=10.0, tau=0.5)
    batched = task.gradient_draws(targets, 400)[:, 0]
    single = torch.stack(list(DiscreteLatentModule.gradient_draws(task, targets, 400)))[:, 0]  # one at a time
    difference = batched.mean() - single.mean()
    error = (batched.var() / 400 + single.var() / 400) ** 0.5
    assert abs(difference) < 4 * error
    assert batched.var() / single.var() == pytest.approx(1.0, abs=4 * (2 / 399) ** 0.5)  # F-test, 4 sigma


def test_gradient_statistics_report_variance_bias_and_exact_loss():
    task, targets = poisson_task(rate=10.0)
    stats = task.gradient_statistics(targets)
    assert set(stats) == {"grad_var", "grad_bias", "grad_bias_stderr", "exact_loss"}
    assert stats["grad_var"] > 0 and stats["grad_bias"] >= 0
    assert stats["grad_bias_stderr"] == pytest.approx((stats["grad_var"] / task.grad_draws) ** 0.5)


def test_implicit_start_is_the_truncated_initial_distribution():
    task, _ = poisson_task(rate=7.0, estimator=GenGSImplicit(window=30))
    expected = TruncatedPoisson(torch.tensor(7.0), 30)
    assert torch.allclose(task.raw.log_softmax(-1), expected.log_pmf, atol=1e-6)


def test_a_non_finite_loss_stops_training_with_the_step():
    class BrokenAtStepThree(ToyTask):
        def objective(self, batch, z):
            value = super().objective(batch, z)
            return value * float("nan") if self.global_step == 3 else value

    import pytorch_lightning as pl

    task = BrokenAtStepThree(GenGSExplicit(window=60), Prior("poisson", {"rate": 20.0}), grad_every=0)
    trainer = pl.Trainer(max_steps=10, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    with pytest.raises(FloatingPointError, match=r"loss is nan at global step 3, epoch 0, batch 3"):
        trainer.fit(task, ToyTargets(num_targets=10))
