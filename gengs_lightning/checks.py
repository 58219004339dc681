"""Declarative checks of constructor arguments, with one message format for the whole package.

Every check names the argument, says what is accepted and shows the value it got, e.g.
``num_samples must be an integer >= 1, got 0`` or ``tau must be a finite number > 0, got inf``; a
``meaning`` is put in parentheses after the name (``lr (the learning rate of ...) must be ...``).
``bool`` is not accepted where a number is asked for (Python counts ``True`` as the integer 1).
"""

from __future__ import annotations

import math
from typing import Any


def _named(name: str, meaning: str | None) -> str:
    return f"{name} ({meaning})" if meaning else name


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _accepted(
    kind: str, low: float | None, high: float | None, low_closed: bool = True, high_closed: bool = True
) -> str:
    """What a range accepts: ``an integer >= 1``, ``a finite number > 0``, ``a number in [0, 1)``."""
    if low is not None and high is not None:
        interval = f"{'[' if low_closed else '('}{low}, {high}{']' if high_closed else ')'}"
        return f"{'an' if kind == 'integer' else 'a'} {kind} in {interval}"
    article = "an" if kind == "integer" else "a finite"
    if low is not None:
        return f"{article} {kind} {'>=' if low_closed else '>'} {low}"
    if high is not None:
        return f"{article} {kind} {'<=' if high_closed else '<'} {high}"
    return f"{article} {kind}"


def check_int(
    name: str, value: Any, minimum: int | None = None, maximum: int | None = None, meaning: str | None = None
) -> int:
    """``value`` itself if it is an integer in ``[minimum, maximum]`` (a bound left ``None`` is open).

    Raises:
        ValueError: ``"<name> must be an integer >= <minimum>, got <value>"`` (or ``in [a, b]``, ``<= b``).
    """
    inside = isinstance(value, int) and not isinstance(value, bool)
    inside = inside and (minimum is None or value >= minimum) and (maximum is None or value <= maximum)
    if not inside:
        raise ValueError(f"{_named(name, meaning)} must be {_accepted('integer', minimum, maximum)}, got {value!r}")
    return value


def check_number(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    low_closed: bool = False,
    high_closed: bool = False,
    meaning: str | None = None,
) -> float:
    """``value`` itself if it is a finite real number between ``low`` and ``high``.

    The bounds are open unless ``low_closed`` / ``high_closed``; a bound left ``None`` is no bound (the
    value must still be finite).

    Raises:
        ValueError: ``"<name> must be a finite number > 0, got <value>"``, ``"... a number in [0, 1) ..."``.
    """
    inside = _is_number(value) and math.isfinite(value)
    if inside and low is not None:
        inside = value >= low if low_closed else value > low
    if inside and high is not None:
        inside = value <= high if high_closed else value < high
    if not inside:
        accepted = _accepted("number", low, high, low_closed, high_closed)
        raise ValueError(f"{_named(name, meaning)} must be {accepted}, got {value!r}")
    return value


def check_bool(name: str, value: Any, meaning: str | None = None) -> bool:
    """``value`` itself if it is ``True`` or ``False`` (not ``0``, ``1`` or a string).

    Raises:
        ValueError: ``"<name> must be a bool (True or False), got <value>"``.
    """
    if not isinstance(value, bool):
        raise ValueError(f"{_named(name, meaning)} must be a bool (True or False), got {value!r}")
    return value


def check_choice(name: str, value: Any, accepted: tuple[str, ...] | list[str]) -> str:
    """``value`` itself if it is one of ``accepted``.

    Raises:
        ValueError: ``"unknown <name> <value>; accepted: a, b, c"``.
    """
    if value not in accepted:
        raise ValueError(f"unknown {name} {value!r}; accepted: {', '.join(accepted)}")
    return value
