"""The command line: ``python -m gengs_lightning {fit,validate,test,predict} --config ...``."""

from __future__ import annotations

import pytorch_lightning as pl
from pytorch_lightning.cli import ArgsType, LightningArgumentParser, LightningCLI

from gengs_lightning.callbacks import TemperatureSchedule
from gengs_lightning.models import DiscreteLatentModule

#: TensorBoard is the default logger; configs name their runs with ``trainer.logger.init_args.name``.
DEFAULT_LOGGER = {
    "class_path": "pytorch_lightning.loggers.TensorBoardLogger",
    "init_args": {"save_dir": "logs", "name": "default", "default_hp_metric": False},
}


class GenGSCLI(LightningCLI):
    """LightningCLI for :class:`DiscreteLatentModule` models with an always-present temperature schedule.

    The schedule is a top-level ``temperature`` group (``--temperature.kind exponential``), not an
    entry of ``trainer.callbacks``, so that a config that lists other callbacks cannot drop it.
    ``--test_after_fit true`` makes ``fit`` also test the best checkpoint.
    """

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(TemperatureSchedule, "temperature")
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=False,
            help="After fit, run the test loop on the best checkpoint (or the final weights without one).",
        )

    def after_fit(self) -> None:
        """Test the best checkpoint when ``test_after_fit`` is set, so one command trains and tests."""
        if not self.config[self.subcommand].get("test_after_fit"):
            return
        checkpoint = self.trainer.checkpoint_callback
        best = getattr(checkpoint, "best_model_path", "") if checkpoint is not None else ""
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best or None)


def main(args: ArgsType = None, run: bool = True) -> GenGSCLI:
    """Run the CLI (``args=None`` reads ``sys.argv``).

    Args:
        args: Command-line arguments, e.g. ``["fit", "--config", "configs/toy/poisson.yaml"]``.
        run: Whether to run the subcommand (``False`` only builds the objects, with no subcommand).

    Returns:
        The CLI object, holding ``model``, ``datamodule`` and ``trainer``.
    """
    return GenGSCLI(
        model_class=DiscreteLatentModule,
        datamodule_class=pl.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={"logger": DEFAULT_LOGGER},
        args=args,
        run=run,
    )
