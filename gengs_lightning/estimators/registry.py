"""The one list of estimators: what the CLI tests, the contract tests and the comparison script run.

Every concrete estimator of the package registers itself where it is defined (``@register`` above the
class); code elsewhere, a test or a user's package, registers its own the same way at run time:

    from gengs_lightning.estimators.registry import register, registered

    @register
    class MyEstimator(WindowedEstimator): ...

    assert MyEstimator in registered()

What an estimator needs to be run (its minimum sample count, the families it supports, example
constructions) it says itself as class attributes (:class:`~gengs_lightning.estimators.Estimator`).
"""

from __future__ import annotations

from typing import TypeVar

from gengs_lightning.estimators.base import Estimator

E = TypeVar("E", bound=type[Estimator])

_REGISTERED: dict[str, type[Estimator]] = {}


def class_path(cls: type[Estimator]) -> str:
    """The path a configuration names ``cls`` by: ``gengs_lightning.estimators.<Name>`` for the package's own."""
    import gengs_lightning.estimators as package

    if getattr(package, cls.__name__, None) is cls:
        return f"{package.__name__}.{cls.__name__}"
    return f"{cls.__module__}.{cls.__qualname__}"


def register(cls: E) -> E:
    """Add a concrete estimator class to the registry (usable as a class decorator); returns the class.

    Raises:
        TypeError: For a class that is not a concrete :class:`Estimator`.
    """
    if not (isinstance(cls, type) and issubclass(cls, Estimator)) or getattr(cls, "__abstractmethods__", None):
        raise TypeError(f"only concrete Estimator subclasses can be registered, got {cls!r}")
    _REGISTERED[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return cls


def unregister(cls: type[Estimator]) -> None:
    """Remove a class registered with :func:`register` (e.g. a test's own, after the test)."""
    _REGISTERED.pop(f"{cls.__module__}.{cls.__qualname__}", None)


def registered() -> tuple[type[Estimator], ...]:
    """The registered estimator classes, in registration order (the package's in its own order)."""
    return tuple(_REGISTERED.values())
