"""ToyTargets: draws from the model's target distribution, reproducible from a seed."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from gengs_lightning.data import ToyTargets
from gengs_lightning.distributions import Prior


def test_draws_are_reproducible_and_independent_of_the_global_seed():
    poisson = Prior("poisson", {"rate": 20.0}).untruncated()
    torch.manual_seed(1)
    first = ToyTargets.draw(poisson, 100, seed=3)
    torch.manual_seed(2)
    second = ToyTargets.draw(poisson, 100, seed=3)
    assert torch.equal(first, second)
    assert not torch.equal(first, ToyTargets.draw(poisson, 100, seed=4))
    after = torch.rand(1)
    torch.manual_seed(2)
    ToyTargets.draw(poisson, 100, seed=3)
    assert torch.equal(torch.rand(1), after)  # the global generator is left as it was


@pytest.mark.parametrize(
    ("family", "params"),
    [("poisson", {"rate": 20.0}), ("binomial", {"total_count": 20, "probs": 0.3})],
)
def test_targets_follow_the_target_distribution(family, params):
    distribution = Prior(family, params).untruncated()
    draws = ToyTargets.draw(distribution, 20_000, seed=0)
    mean, variance = distribution.mean.item(), distribution.variance.item()
    assert abs(draws.mean().item() - mean) < 4 * (variance / draws.numel()) ** 0.5


def test_needs_a_model_with_a_target():
    class NoTarget(pl.LightningModule):
        pass

    data = ToyTargets()
    data.trainer = pl.Trainer(logger=False)
    data.trainer.strategy.connect(NoTarget())
    with pytest.raises(ValueError, match="needs a model with a `target` distribution"):
        data.setup("fit")


def test_rejects_empty_sizes():
    with pytest.raises(ValueError, match="^num_targets must be an integer >= 1, got 0$"):
        ToyTargets(num_targets=0)
    with pytest.raises(ValueError, match="^steps_per_epoch must be an integer >= 1, got True$"):
        ToyTargets(steps_per_epoch=True)
