"""Estimators swapped in on the command line get at least the samples per example they need.

A config written for GenGS says ``num_samples: 1``; ``--model.estimator gengs_lightning.estimators.ReinforceLOO``
carries it over to an estimator that needs two (:attr:`~gengs_lightning.estimators.Estimator.min_samples`).
Rather than fail, the CLI trains with the estimator's minimum and says so in one line.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator

from jsonargparse import Namespace
from pytorch_lightning.utilities import rank_zero_info

from gengs_lightning.estimators import Estimator


def _configured_classes(node: object, flag: str) -> Iterator[tuple[str, Namespace]]:
    """``(flag, entry)`` of every ``class_path`` entry under ``node``, e.g. ``("--model.estimator", ...)``."""
    if isinstance(node, list):
        for item in node:
            yield from _configured_classes(item, flag)
    if not isinstance(node, Namespace):
        return
    if "class_path" in node:
        yield flag, node
        node = node.get("init_args") or Namespace()
    for name, value in vars(node).items():
        yield from _configured_classes(value, f"{flag}.{name}" if flag else f"--{name}")


def _estimator_class(class_path: str) -> type[Estimator] | None:
    module_name, _, class_name = class_path.rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name, None) if module_name else None
    return cls if isinstance(cls, type) and issubclass(cls, Estimator) else None


def raise_num_samples_to_minimum(config: Namespace) -> list[str]:
    """Raise every configured estimator's ``num_samples`` below its class's ``min_samples`` to that minimum.

    Args:
        config: A subcommand's parsed configuration, edited in place before its classes are built.

    Returns:
        One notice per raised value (also printed on rank zero), e.g. ``ReinforceLOO needs num_samples >= 2:
        training with --model.estimator.num_samples 2 (the configuration gave 1)``.
    """
    notices = []
    for flag, entry in _configured_classes(config, ""):
        cls = _estimator_class(entry.class_path)
        arguments = entry.get("init_args")
        num_samples = arguments.get("num_samples") if arguments is not None else None
        if cls is None or not isinstance(num_samples, int) or not 1 <= num_samples < cls.min_samples:
            continue
        arguments.num_samples = cls.min_samples
        notices.append(
            f"{cls.__name__} needs num_samples >= {cls.min_samples}: training with {flag}.num_samples "
            f"{cls.min_samples} (the configuration gave {num_samples})"
        )
    for notice in notices:
        rank_zero_info(notice)
    return notices
