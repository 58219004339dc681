"""The command line: ``python -m gengs_lightning {fit,validate,test,predict} --config ...``."""

from __future__ import annotations

import importlib

import pytorch_lightning as pl
from jsonargparse import Namespace
from jsonargparse.typing import NonNegativeInt
from pytorch_lightning.callbacks import ProgressBar
from pytorch_lightning.cli import ArgsType, LightningArgumentParser, LightningCLI

from gengs_lightning.callbacks import HParamsTable, TemperatureSchedule
from gengs_lightning.checkpoint_broadcast import rank_zero_checkpoint
from gengs_lightning.cli_batch_counts import parse_batch_counts_as_ints
from gengs_lightning.cli_config import SaveConfigIntoRun
from gengs_lightning.cli_errors import PROG, CLIArgumentParser, reported_config_errors
from gengs_lightning.cli_evaluation import prepare_evaluation
from gengs_lightning.cli_quiet import silence_lightning_noise
from gengs_lightning.cli_samples import raise_num_samples_to_minimum
from gengs_lightning.summary import print_summary

#: TensorBoard is the default logger; configs name their runs with ``trainer.logger.init_args.name``.
#: Its version folder is claimed atomically, so runs started at once into one folder get their own.
DEFAULT_LOGGER = {
    "class_path": "gengs_lightning.loggers.TensorBoardLogger",
    "init_args": {"save_dir": "logs", "name": "default", "default_hp_metric": False},
}


#: Steps between progress-bar refreshes. Lightning's default, every step, costs about 5% of an MNIST VAE
#: step on a 2-core CPU (scripts/bench_training.py); every 10 steps, about 1%.
DEFAULT_PROGRESS_BAR_REFRESH_RATE = 10


class GenGSCLI(LightningCLI):
    """LightningCLI for the package's models with an always-present temperature schedule.

    Any LightningModule is accepted: the :class:`~gengs_lightning.models.DiscreteLatentModule` models and
    the :class:`~gengs_lightning.models.NVDM` reference (which a constant schedule leaves alone).

    The schedule is a top-level ``temperature`` group (``--temperature.kind exponential``), not an
    entry of ``trainer.callbacks``, so that a config that lists other callbacks cannot drop it.
    ``--test_after_fit true`` makes ``fit`` also test the best checkpoint; ``--compile true`` adds a
    :class:`~gengs_lightning.callbacks.CompileModel`. The progress bar refreshes
    every ``--progress_bar_refresh_rate`` steps (0 hides it) unless the config lists a progress bar of
    its own or sets ``trainer.enable_progress_bar`` to false. Every run also has an
    :class:`~gengs_lightning.callbacks.HParamsTable` (TensorBoard's HPARAMS row, added by :func:`main`
    whatever the config's callbacks), and ``fit`` and ``test`` end with a printed summary of the metrics
    and of what the model found (:mod:`gengs_lightning.summary`).
    """

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(TemperatureSchedule, "temperature")
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=False,
            help="After fit, run the test loop on the best checkpoint (or the final weights without one).",
        )
        parser.add_argument(
            "--compile",
            type=bool,
            default=False,
            help="torch.compile the model's encode and objective (gengs_lightning.callbacks.CompileModel; list "
            "that callback in trainer.callbacks instead to set its options).",
        )
        parser.add_argument(
            "--progress_bar_refresh_rate",
            type=NonNegativeInt,
            default=DEFAULT_PROGRESS_BAR_REFRESH_RATE,
            help="Steps between progress-bar refreshes (0 hides the bar); ignored when the config lists its "
            "own progress bar callback or disables the progress bar.",
        )

    def before_instantiate_classes(self) -> None:
        """Add a ``TQDMProgressBar`` with ``progress_bar_refresh_rate`` unless the config has its own bar.

        Lightning's own default bar refreshes after every step, which costs a few percent of a small
        model's step. Before that, :func:`~gengs_lightning.cli_evaluation.prepare_evaluation` logs
        ``validate``, ``test`` and ``predict`` of a checkpoint into its run and adds a prediction writer
        to ``predict``, and an estimator that needs more samples per example than the configuration gives
        (a swapped-in ``ReinforceLOO``) gets its minimum
        (:func:`~gengs_lightning.cli_samples.raise_num_samples_to_minimum`). A ``--ckpt_path`` loads with
        ``weights_only=True`` unless ``--weights_only false`` is given (the checkpoints hold tensors and
        plain values only).
        """
        config = self.config[self.subcommand] if self.subcommand else self.config
        prepare_evaluation(config, self.subcommand)
        raise_num_samples_to_minimum(config)
        if config.get("weights_only", False) is None:
            config.weights_only = True
        trainer = config.trainer
        if config.get("compile"):
            compiler = Namespace(class_path="gengs_lightning.callbacks.CompileModel", init_args=Namespace())
            trainer.callbacks = [*_as_list(trainer.callbacks), compiler]
        if trainer.enable_progress_bar is False:
            return
        callbacks = _as_list(trainer.callbacks)
        if any(_is_progress_bar(callback) for callback in callbacks):
            return
        progress_bar = Namespace(
            class_path="pytorch_lightning.callbacks.TQDMProgressBar",
            init_args=Namespace(refresh_rate=int(config.progress_bar_refresh_rate)),
        )
        trainer.callbacks = [*callbacks, progress_bar]

    def instantiate_classes(self) -> None:
        """Lightning's, with a value that a configured class rejects reported in one line naming its flag.

        See :func:`~gengs_lightning.cli_errors.reported_config_errors`.
        """
        config = self.config[self.subcommand] if self.subcommand else self.config
        with reported_config_errors(config, f"{PROG} {self.subcommand or ''}".rstrip()):
            super().instantiate_classes()

    def after_fit(self) -> None:
        """Test the best checkpoint if ``test_after_fit`` is set (one command trains and tests); print the summary.

        Only global rank zero has the checkpoint file: other ranks, on nodes that may share no folder with
        it, test a copy of its bytes (:func:`~gengs_lightning.checkpoint_broadcast.rank_zero_checkpoint`).
        """
        if self.config[self.subcommand].get("test_after_fit"):
            checkpoint = self.trainer.checkpoint_callback
            best = getattr(checkpoint, "best_model_path", "") if checkpoint is not None else ""
            with rank_zero_checkpoint(self.trainer, best) as path:
                self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=path, weights_only=True)
        print_summary(self.trainer, self.model, "fit")

    def after_test(self) -> None:
        """Print the summary of the test (:func:`~gengs_lightning.summary.print_summary`)."""
        print_summary(self.trainer, self.model, "test")


def _as_list(callbacks) -> list:
    """A config's ``trainer.callbacks`` (``None``, one callback or a list) as a list."""
    if not callbacks:
        return []
    return callbacks if isinstance(callbacks, list) else [callbacks]


def _is_progress_bar(callback: Namespace | pl.Callback) -> bool:
    """Whether a configured callback (a ``class_path`` namespace or an instance) is a progress bar."""
    if isinstance(callback, pl.Callback):
        return isinstance(callback, ProgressBar)
    module_name, _, class_name = callback.class_path.rpartition(".")
    return issubclass(getattr(importlib.import_module(module_name), class_name), ProgressBar)


def main(args: ArgsType = None, run: bool = True) -> GenGSCLI:
    """Run the CLI (``args=None`` reads ``sys.argv``).

    Args:
        args: Command-line arguments, e.g. ``["fit", "--config", "configs/toy/poisson.yaml"]``.
        run: Whether to run the subcommand (``False`` only builds the objects, with no subcommand).

    Returns:
        The CLI object, holding ``model``, ``datamodule`` and ``trainer``.
    """
    silence_lightning_noise()
    parse_batch_counts_as_ints()
    return GenGSCLI(
        model_class=pl.LightningModule,
        datamodule_class=pl.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        seed_everything_default=0,
        save_config_callback=SaveConfigIntoRun,
        save_config_kwargs={"overwrite": True},
        parser_class=CLIArgumentParser,
        trainer_defaults={"logger": DEFAULT_LOGGER, "callbacks": [HParamsTable()]},
        args=args,
        run=run,
    )
