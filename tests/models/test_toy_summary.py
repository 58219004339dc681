"""What a toy run reports: the closed-form optimum of every family against the exact loss, and the summary rows."""

from __future__ import annotations

import pytest
import torch

from gengs_lightning.data import ToyTargets
from gengs_lightning.distributions import Prior
from gengs_lightning.estimators import GenGSExplicit, GenGSImplicit
from gengs_lightning.models import ToyTask
from gengs_lightning.models.toy_summary import project_to_simplex, toy_loss, toy_optimum, toy_summary

COUNT_TARGETS = [
    ("poisson", {"rate": 20.0}),
    ("geometric", {"probs": 0.25}),
    ("negative_binomial", {"total_count": 3.0, "probs": 0.4}),
    ("binomial", {"total_count": 20, "probs": 0.3}),
]


def targets_of(target: Prior) -> torch.Tensor:
    return ToyTargets.draw(target.untruncated(), 100, seed=0)


@pytest.mark.parametrize(("family", "params"), COUNT_TARGETS, ids=[f for f, _ in COUNT_TARGETS])
def test_the_count_optimum_is_where_the_exact_loss_is_smallest(family, params):
    target = Prior(family, params)
    targets = targets_of(target)
    ((name, best),) = toy_optimum(target, targets).items()
    best_loss = toy_loss(target, {name: best}, targets)
    task = ToyTask(GenGSExplicit(), target, init={name: best.item()})
    assert task.exact_loss(targets).item() == pytest.approx(best_loss.item(), rel=1e-5)  # enumeration agrees
    for step in (-1e-2, -1e-3, 1e-3, 1e-2):
        assert toy_loss(target, {name: best * (1 + step)}, targets) > best_loss


def test_the_poisson_optimum_is_the_mean_target_less_a_half():
    target = Prior("poisson", {"rate": 20.0})
    targets = targets_of(target)
    assert toy_optimum(target, targets)["rate"].item() == pytest.approx(targets.mean().item() - 0.5)


def test_the_multinomial_optimum_beats_every_nearby_point_of_the_simplex():
    target = Prior("multinomial", {"total_count": 3, "probs": [0.7, 0.2, 0.1]})
    targets = targets_of(target)
    best = toy_optimum(target, targets)["probs"]
    assert best.sum().item() == pytest.approx(1.0) and (best >= 0).all()
    best_loss = toy_loss(target, {"probs": best}, targets)
    generator = torch.Generator().manual_seed(0)
    for _ in range(50):
        nearby = project_to_simplex(best + 0.02 * torch.randn(3, generator=generator, dtype=torch.float64))
        assert toy_loss(target, {"probs": nearby}, targets) >= best_loss - 1e-12


def test_simplex_projection_keeps_points_of_the_simplex_and_projects_the_others():
    inside = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    assert torch.allclose(project_to_simplex(inside), inside)
    assert torch.allclose(project_to_simplex(torch.tensor([2.0, 0.0, -1.0])), torch.tensor([1.0, 0.0, 0.0]))
    assert torch.allclose(project_to_simplex(torch.tensor([0.6, 0.6])), torch.tensor([0.5, 0.5]))


def test_a_family_without_a_closed_form_has_no_optimum():
    target = Prior("binomial", {"total_count": 1, "probs": 0.3})
    assert toy_optimum(target, targets_of(target)) is None


def test_the_summary_shows_the_family_parameter_or_else_the_posterior_mean():
    target = Prior("poisson", {"rate": 20.0})
    targets = targets_of(target)
    explicit = toy_summary(ToyTask(GenGSExplicit(window=60), target, init={"rate": 5.0}), targets)
    assert explicit["rate"] == pytest.approx(5.0, rel=1e-5)
    assert explicit["optimum rate"] == pytest.approx(targets.mean().item() - 0.5)
    assert explicit["exact loss at optimum"] < explicit["exact loss"]
    implicit = toy_summary(ToyTask(GenGSImplicit(window=60), target, init={"rate": 5.0}), None)
    assert set(implicit) == {"posterior mean"} and implicit["posterior mean"] == pytest.approx(5.0, rel=1e-3)
