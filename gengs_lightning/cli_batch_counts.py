"""Trainer flags where an int counts batches and a float is a fraction, parsed as the user wrote them.

``--trainer.limit_val_batches 1`` means one batch, ``1.0`` every batch (Lightning's documented meaning).
Lightning annotates these flags ``Optional[Union[int, float]]``, but typing caches unions by equality, so
the annotation Lightning gets back is the equal ``Union[float, int, None]`` that ``lightning_fabric``
created first; jsonargparse tries the union's types in order, so ``1`` parsed as ``1.0`` and the run
went through every batch, on the command line and in YAML alike. The flags are re-annotated ``int |
float | None`` (a ``types.UnionType``, which keeps its order) before the parser reads the Trainer's
signature.
"""

from __future__ import annotations

import pytorch_lightning as pl

#: The Trainer's arguments whose meaning differs between ``1`` and ``1.0``.
BATCH_COUNT_FLAGS = (
    "limit_train_batches",
    "limit_val_batches",
    "limit_test_batches",
    "limit_predict_batches",
    "overfit_batches",
    "val_check_interval",
)


def parse_batch_counts_as_ints() -> None:
    """Make a whole number given to a :data:`BATCH_COUNT_FLAGS` flag parse as an int (idempotent)."""
    annotations = pl.Trainer.__init__.__annotations__
    for name in BATCH_COUNT_FLAGS:
        annotations[name] = int | float | None
