"""A TensorBoard logger whose ``version_N`` folder is claimed atomically, so concurrent runs never share one."""

from __future__ import annotations

import os

from lightning_fabric.utilities.cloud_io import _is_local_file_protocol
from pytorch_lightning import loggers
from pytorch_lightning.utilities.rank_zero import rank_zero_only


class TensorBoardLogger(loggers.TensorBoardLogger):
    """Lightning's :class:`~pytorch_lightning.loggers.TensorBoardLogger`, with the next version claimed atomically.

    Lightning picks the next version by listing ``<save_dir>/<name>`` and creates the folder only when
    it first writes, so two runs started at once into one folder can both pick ``version_N`` and then
    overwrite each other's ``config.yaml`` and ``hparams.yaml``. Here the folder is created with
    :func:`os.mkdir`, which fails if another process created it first; the claim then moves on to the
    next number. Only global rank zero claims (it is the only rank that writes); the other ranks of a
    DDP run take their log and checkpoint folders from rank zero through Lightning's broadcasts
    (``Trainer.log_dir``, ``ModelCheckpoint.setup``). An explicit ``version`` and save folders on a
    remote file system (``s3://...``) keep Lightning's behaviour.

    Args: those of :class:`~pytorch_lightning.loggers.TensorBoardLogger`.
    """

    @property
    def version(self) -> int | str:
        """The version given, or else the first free number from the existing versions, its folder created."""
        if self._version is None:
            claim = rank_zero_only.rank == 0 and _is_local_file_protocol(self.root_dir)
            self._version = self._claim_next_version() if claim else self._get_next_version()
        return self._version

    def _claim_next_version(self) -> int:
        """Create ``version_N`` for the first ``N`` from the next listed version whose folder does not exist yet."""
        root = os.path.expanduser(os.path.expandvars(self.root_dir))  # as ``log_dir`` expands it
        os.makedirs(root, exist_ok=True)
        version = self._get_next_version()
        while True:
            try:
                os.mkdir(os.path.join(root, f"version_{version}"))
            except FileExistsError:
                version += 1
            else:
                return version
