"""Where the CLI's ``validate``, ``test`` and ``predict`` put their output: the checkpoint's run, with predictions.

Both functions edit the parsed configuration of a subcommand before its classes are built.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

from jsonargparse import Namespace
from pytorch_lightning.callbacks import BasePredictionWriter
from pytorch_lightning.loggers import TensorBoardLogger

#: Subcommands that evaluate a checkpoint rather than train.
EVALUATION_SUBCOMMANDS = ("validate", "test", "predict")
#: The name of a run's folder under ``<save_dir>/<name>``; its checkpoints go to ``checkpoints/`` in it by default.
_VERSION_FOLDER = re.compile(r"version_(\d+)")


def _configured_class(entry: Namespace | object) -> type:
    """The class of a configured object: a ``class_path`` namespace or an instance."""
    if not isinstance(entry, Namespace):
        return type(entry)
    module_name, _, class_name = entry.class_path.rpartition(".")
    return getattr(importlib.import_module(module_name), class_name)


def log_into_checkpoint_run(config: Namespace, subcommand: str) -> None:
    """Log an evaluation of ``<save_dir>/<name>/version_<k>/checkpoints/<file>`` into ``version_<k>/<subcommand>``.

    Without this, ``test --ckpt_path ...`` opens a new ``version_<k+1>`` and Lightning warns that the
    checkpoint's "dirpath has changed". The evaluation goes into a subfolder of the checkpoint's run
    (the logger's ``sub_dir``) so that the training run's ``config.yaml`` and ``hparams.yaml`` stay as
    they are. Nothing changes unless the logger is a TensorBoard logger with neither ``version`` nor
    ``sub_dir`` set whose ``<save_dir>/<name>`` holds the checkpoint in that layout.

    Args:
        config: The subcommand's configuration (``trainer``, ``ckpt_path``).
        subcommand: ``validate``, ``test`` or ``predict``.
    """
    logger = config.trainer.logger
    if not config.get("ckpt_path") or not isinstance(logger, Namespace):
        return
    if not issubclass(_configured_class(logger), TensorBoardLogger):
        return
    arguments = logger.init_args
    if arguments.get("version") is not None or arguments.get("sub_dir") is not None:
        return
    checkpoints = Path(config.ckpt_path).resolve().parent
    match = _VERSION_FOLDER.fullmatch(checkpoints.parent.name)
    run_root = Path(arguments.save_dir, arguments.get("name") or "").resolve()
    if checkpoints.name == "checkpoints" and match and checkpoints.parent.parent == run_root:
        arguments.version = int(match.group(1))
        arguments.sub_dir = subcommand


def add_prediction_writer(trainer: Namespace) -> None:
    """Add a :class:`~gengs_lightning.callbacks.PredictionWriter` unless the config lists a prediction writer.

    Args:
        trainer: The ``trainer`` group of the ``predict`` configuration.
    """
    callbacks = trainer.callbacks or []
    callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
    if any(issubclass(_configured_class(callback), BasePredictionWriter) for callback in callbacks):
        return
    writer = Namespace(class_path="gengs_lightning.callbacks.PredictionWriter", init_args=Namespace())
    trainer.callbacks = [*callbacks, writer]


def prepare_evaluation(config: Namespace, subcommand: str | None) -> None:
    """Both of the above, as they apply to ``subcommand`` (``validate``, ``test``, ``predict``; others untouched)."""
    if subcommand in EVALUATION_SUBCOMMANDS:
        log_into_checkpoint_run(config, subcommand)
    if subcommand == "predict":
        add_prediction_writer(config.trainer)
