"""The KL between untruncated members of one family is registered: ``kl_divergence(posterior, prior)`` works.

Its closed forms are checked against enumeration and torch's own KLs in
``tests/estimators/test_score_function.py`` (through ``untruncated_kl``); here, that the registry finds them.
"""

from __future__ import annotations

import pytest
import torch
from torch.distributions import kl_divergence

from gengs_lightning.distributions import (
    Prior,
    UntruncatedPosterior,
    UntruncatedPrior,
    kl_untruncated,
    untruncated_kl,
)

PRIORS = {
    "poisson": {"rate": 2.0},
    "geometric": {"probs": 0.25},
    "negative_binomial": {"total_count": 3, "probs": 0.5},
    "binomial": {"total_count": 20, "probs": 0.3},
    "categorical": {"probs": [0.7, 0.2, 0.1]},
    "multinomial": {"total_count": 3, "probs": [0.7, 0.2, 0.1]},
}


@pytest.mark.parametrize("family", list(PRIORS))
def test_kl_divergence_dispatches_to_the_closed_form(family):
    prior = Prior(family, PRIORS[family])
    raw = torch.randn(4, 2, prior.raw_size, generator=torch.Generator().manual_seed(0), requires_grad=True)
    posterior, untruncated_prior = UntruncatedPosterior(raw, prior), UntruncatedPrior(prior)
    kl = kl_divergence(posterior, untruncated_prior)
    assert torch.equal(kl, kl_untruncated(posterior, untruncated_prior))
    assert torch.equal(kl, untruncated_kl(raw, prior))
    assert kl.shape == (4, 2) and torch.isfinite(kl).all() and (kl >= -1e-6).all()
    (grad,) = torch.autograd.grad(kl.sum(), raw)
    assert torch.isfinite(grad).all()


def test_the_prior_wrapper_scores_and_samples_as_the_torch_family():
    prior = Prior("poisson", {"rate": 2.0})
    wrapped, base = UntruncatedPrior(prior), prior.untruncated()
    value = torch.arange(6.0)
    assert torch.equal(wrapped.log_prob(value), base.log_prob(value))
    assert wrapped.expand((3,)).sample().shape == (3,)


def test_members_of_two_families_are_refused():
    poisson, geometric = Prior("poisson", PRIORS["poisson"]), Prior("geometric", PRIORS["geometric"])
    with pytest.raises(ValueError, match="two families"):
        kl_divergence(UntruncatedPosterior(torch.zeros(2, 1, 1), poisson), UntruncatedPrior(geometric))
