"""gradient_statistics: the running sums over draws given one at a time equal the two-pass statistics."""

from __future__ import annotations

import pytest
import torch

from gengs_lightning.models.gradients import gradient_statistics


def test_draws_one_at_a_time_give_the_statistics_of_all_at_once():
    # far from zero and of unequal scales: a naive sum of squares would lose digits
    draws = torch.randn(50, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    draws = draws * torch.logspace(-3, 3, 7, dtype=torch.float64) + 1e4
    exact = torch.full((7,), 1e4, dtype=torch.float64)
    together = gradient_statistics(draws, exact)
    streamed = gradient_statistics(iter(draws), exact)
    for name in ("grad_var", "grad_bias", "grad_bias_stderr"):
        # float64 rounding of 50 updates of values ~1e4 against a variance ~1e6: far below 1e-10 relative
        torch.testing.assert_close(streamed[name], together[name], rtol=1e-10, atol=0)
    reference = sum(((draws[:, p] - draws[:, p].mean()) ** 2).sum() / 49 for p in range(7))
    torch.testing.assert_close(together["grad_var"], reference, rtol=1e-12, atol=0)


@pytest.mark.parametrize("draws", [torch.zeros(1, 3), [torch.zeros(3)], []], ids=["tensor", "one", "none"])
def test_fewer_than_two_draws_are_refused(draws):
    with pytest.raises(ValueError, match="at least 2 draws"):
        gradient_statistics(draws)
