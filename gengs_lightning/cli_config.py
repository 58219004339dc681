"""Where the CLI saves a run's ``config.yaml``: into the run's folder, never into the working directory."""

from __future__ import annotations

import pytorch_lightning as pl
from pytorch_lightning.cli import SaveConfigCallback


class SaveConfigIntoRun(SaveConfigCallback):
    """Lightning's :class:`~pytorch_lightning.cli.SaveConfigCallback`, saving only where a run has a folder.

    Lightning writes ``config.yaml`` into ``trainer.log_dir``, which without a logger is ``default_root_dir``,
    by default the working directory: ``--trainer.logger false`` left a ``config.yaml`` wherever it was run.
    Without a logger the configuration is now saved only into a ``--trainer.default_root_dir`` given
    explicitly.
    """

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if trainer.logger is None and self.config.trainer.get("default_root_dir") is None:
            return
        super().setup(trainer, pl_module, stage)
