"""Lightning's advertising tips and a torch deprecation warning that Lightning triggers, silenced for the CLI.

Every ``fit`` printed two ``💡 Tip:`` lines (install ``litlogger``, ``litmodels``) and a ``FutureWarning``
that ``isinstance(treespec, LeafSpec)`` is deprecated, raised in Lightning's own ``_pytree.py``: nothing a
user of this package can act on. Only those exact messages are dropped.
"""

from __future__ import annotations

import logging
import warnings

#: Loggers Lightning's ``rank_zero_info`` writes through.
_RANK_ZERO_LOGGERS = ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero")
_TIP = "💡 Tip:"


class _DropTips(logging.Filter):
    """Drop Lightning's ``💡 Tip:`` records."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_TIP)


def silence_lightning_noise() -> None:
    """Drop Lightning's tips and its ``LeafSpec`` deprecation warning for the rest of the process (idempotent)."""
    for name in _RANK_ZERO_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(existing, _DropTips) for existing in logger.filters):
            logger.addFilter(_DropTips())
    warnings.filterwarnings(
        "ignore",
        message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        category=FutureWarning,
        module=r"pytorch_lightning\.utilities\._pytree",
    )
