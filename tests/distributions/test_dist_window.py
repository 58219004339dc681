"""``Window``: construction, validation, outcomes; windows a family rejects.

Covers: ``Window.of`` for a level ``n`` and a pair; errors for ``n < 1``, ``low > high``, ``low < 0``,
non-integers (floats, bools, strings, wrong-length pairs); a binomial window beyond ``total_count``.
"""

from __future__ import annotations

import pytest
import torch

from gengs_lightning.distributions import TruncatedBinomial, TruncatedPoisson, Window


def test_window_of_level_and_pair():
    assert Window.of(1) == Window(0, 0)
    assert Window.of(10) == Window(0, 9)
    assert Window.of((3, 7)) == Window(3, 7)
    assert Window.of([3, 3]) == Window(3, 3)
    w = Window(2, 5)
    assert Window.of(w) is w
    assert w.size == 4 and Window.of(1).size == 1
    assert torch.equal(w.outcomes(torch.float64), torch.tensor([2.0, 3.0, 4.0, 5.0], dtype=torch.float64))
    assert w.outcomes().dtype == torch.float32
    assert str(w) == "[2, 5]"
    with pytest.raises(Exception):  # frozen  # noqa: B017
        w.low = 0


@pytest.mark.parametrize("level", [0, -1, -10])
def test_level_below_one_raises(level):
    with pytest.raises(ValueError, match="n must be"):
        Window.of(level)


@pytest.mark.parametrize(
    "spec",
    [
        (5, 4),
        (1, 0),
        (-1, 3),
        (-2, -1),
        (1.5, 3),
        (0, 2.0),
        (True, 3),
        (0, False),
        ("0", 3),
        (1, 2, 3),
        (4,),
        2.5,
        "5",
        None,
    ],
    ids=str,
)
def test_invalid_window_specs_raise(spec):
    with pytest.raises(ValueError):
        Window.of(spec)


def test_invalid_window_constructor_messages():
    with pytest.raises(ValueError, match="empty"):
        Window(5, 4)
    with pytest.raises(ValueError, match=">= 0"):
        Window(-1, 4)
    with pytest.raises(ValueError, match="integer"):
        Window(0.0, 4)
    with pytest.raises(ValueError, match="integer"):
        Window(0, True)


def test_family_rejects_invalid_windows():
    rate = torch.tensor(2.0, dtype=torch.float64)
    for spec in (0, (3, 2), (-1, 5), (0.5, 5)):
        with pytest.raises(ValueError):
            TruncatedPoisson(rate, spec)


@pytest.mark.parametrize("window", [(0, 11), (5, 11), 12, 20, (11, 11)], ids=str)
def test_binomial_window_beyond_total_count_raises(window):
    with pytest.raises(ValueError, match="support"):
        TruncatedBinomial(10, probs=torch.tensor(0.3, dtype=torch.float64), window=window)


def test_binomial_windows_inside_support_are_fine():
    for window in [(0, 10), 11, (10, 10), (3, 7), None]:
        table = TruncatedBinomial(10, probs=torch.tensor(0.3, dtype=torch.float64), window=window)
        assert table.window.high <= 10
