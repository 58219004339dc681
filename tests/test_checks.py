"""The package's argument checks: what each accepts, and the one message format of its refusals."""

from __future__ import annotations

import math
import re

import pytest

from gengs_lightning.checks import check_bool, check_choice, check_int, check_number


@pytest.mark.parametrize("value", [1, 2, 10**12])
def test_check_int_returns_accepted_integers(value):
    assert check_int("num_samples", value, 1) is value


@pytest.mark.parametrize(
    ("value", "bounds", "message"),
    [
        (0, (1, None), "num_samples must be an integer >= 1, got 0"),
        (True, (1, None), "num_samples must be an integer >= 1, got True"),
        (2.0, (1, None), "num_samples must be an integer >= 1, got 2.0"),
        ("3", (1, None), "num_samples must be an integer >= 1, got '3'"),
        (7, (2, 6), "num_samples must be an integer in [2, 6], got 7"),
        (7, (None, 6), "num_samples must be an integer <= 6, got 7"),
        (None, (None, None), "num_samples must be an integer, got None"),
    ],
)
def test_check_int_names_the_argument_the_accepted_range_and_the_value(value, bounds, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        check_int("num_samples", value, *bounds)


@pytest.mark.parametrize(
    ("value", "kwargs", "message"),
    [
        (0.0, {"low": 0}, "tau must be a finite number > 0, got 0.0"),
        (math.inf, {"low": 0}, "tau must be a finite number > 0, got inf"),
        (math.nan, {}, "tau must be a finite number, got nan"),
        (False, {"low": 0}, "tau must be a finite number > 0, got False"),
        (-1, {"low": 0, "low_closed": True}, "tau must be a finite number >= 0, got -1"),
        (1.0, {"low": 0, "high": 1, "low_closed": True}, "tau must be a number in [0, 1), got 1.0"),
        (1.5, {"low": 0, "high": 1, "high_closed": True}, "tau must be a number in (0, 1], got 1.5"),
        (2, {"high": 1}, "tau must be a finite number < 1, got 2"),
        (0, {"low": 0, "meaning": "the temperature"}, "tau (the temperature) must be a finite number > 0, got 0"),
    ],
)
def test_check_number_names_the_argument_the_interval_and_the_value(value, kwargs, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        check_number("tau", value, **kwargs)


@pytest.mark.parametrize(
    ("value", "kwargs"),
    [
        (0.5, {"low": 0}),
        (0, {"low": 0, "low_closed": True}),
        (1, {"low": 0, "high": 1, "high_closed": True}),
        (-3.0, {}),
    ],
)
def test_check_number_returns_values_inside_the_interval(value, kwargs):
    assert check_number("tau", value, **kwargs) == value


def test_check_bool_and_check_choice():
    assert check_bool("hard", True) is True and check_bool("hard", False) is False
    for value in (0, 1, "true", None):
        with pytest.raises(
            ValueError, match=f"^hard must be a bool \\(True or False\\), got {re.escape(repr(value))}$"
        ):
            check_bool("hard", value)
    assert check_choice("activation", "tanh", ("relu", "tanh")) == "tanh"
    with pytest.raises(ValueError, match="^unknown activation 'swish'; accepted: relu, tanh$"):
        check_choice("activation", "swish", ("relu", "tanh"))
