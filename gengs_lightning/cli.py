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
    """

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(TemperatureSchedule, "temperature")


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
