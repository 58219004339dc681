"""TensorBoard's HPARAMS table: one row per run, the knobs a user compares and the metrics that matter.

The columns are fixed (:data:`COLUMNS`) and flat: the estimator by name with its window, temperature and
sample count, its other arguments in one readable string, the latent and its prior, the temperature
schedule, the optimizer and learning rate, the batch size and the seed. Every run declares all of them,
because TensorBoard takes the table's columns from the declaration of one run (whichever it reads
first): runs that declared different columns would hide each other's values. The metrics are ``hp/*``
scalars (:func:`metric_tag`): the best value of a model's validation metrics and its test metrics.

A model describes its latent through a ``latent_hparams()`` method (see
:meth:`DiscreteLatentModule.latent_hparams <gengs_lightning.models.DiscreteLatentModule.latent_hparams>`),
the estimator through the arguments it was configured with, and it names its metrics in a
``hparams_metrics`` attribute; :class:`~gengs_lightning.callbacks.HParamsTable` writes the table.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pytorch_lightning as pl
import torch
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

from gengs_lightning.distributions import Prior
from gengs_lightning.estimators import Estimator

if TYPE_CHECKING:  # the callbacks import this module
    from gengs_lightning.callbacks.temperature import TemperatureSchedule

#: A value of the table: a string or a number.
HParam = str | float

#: The HPARAMS columns in order, each a string (``str``) or a number (``float``) column.
COLUMNS: dict[str, type] = {
    "model": str,
    "data": str,
    "estimator": str,
    "window": str,
    "tau": float,
    "tau_schedule": str,
    "num_samples": float,
    "estimator_args": str,
    "latent": str,
    "prior": str,
    "optimizer": str,
    "lr": float,
    "batch_size": float,
    "seed": float,
}

#: The metrics of a model that names none: the loss, best over validations and on test.
DEFAULT_METRICS = ("val/loss", "test/loss")

#: Estimator arguments that set the truncation window (the ``window`` column), in order of preference.
WINDOW_ARGS = ("window", "truncation")

#: Arguments of each temperature schedule shown in the ``tau_schedule`` column.
_SCHEDULE_ARGS = {
    "constant": (),
    "exponential": ("tau_min", "rate"),
    "linear": ("tau_min", "total_steps"),
    "cosine": ("tau_min", "total_steps"),
}


def format_value(value: Any) -> str:
    """A short readable form: numbers with up to 6 significant digits, tensors and lists as ``[a, b]``."""
    if torch.is_tensor(value):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_value(item) for item in value) + "]"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def estimator_hparams(estimator: Estimator, config: Any = None) -> dict[str, HParam]:
    """The estimator's columns: its name, window, temperature, samples and other arguments.

    Args:
        estimator: The estimator.
        config: What it was built from, ``{"class_path": ..., "init_args": {...}}`` (what the CLI stores in
            a model's ``hparams_initial``); without it only the arguments every estimator has are known.

    Returns:
        ``estimator``, ``tau``, ``num_samples``, and, from the configuration, ``window`` and
        ``estimator_args`` (the other arguments as ``name=value, ...``); ``tau_schedule`` is ``learned``
        for estimators that learn their temperature.
    """
    args = dict(config.get("init_args") or {}) if isinstance(config, Mapping) else {}
    values: dict[str, HParam] = {
        "estimator": type(estimator).__name__,
        "tau": float(args.pop("tau", estimator.tau)),
        "num_samples": float(args.pop("num_samples", estimator.num_samples)),
    }
    window = next((name for name in WINDOW_ARGS if name in args), None)
    if window is not None:
        values["window"] = format_value(args.pop(window))
    if args:
        values["estimator_args"] = ", ".join(f"{name}={format_value(value)}" for name, value in sorted(args.items()))
    if estimator.learns_temperature:
        values["tau_schedule"] = "learned"
    return values


def prior_hparams(prior: Prior) -> dict[str, HParam]:
    """The latent's columns: ``latent`` (the family) and ``prior`` (e.g. ``poisson(rate=2)``)."""
    family = prior.family.family_name
    params = ", ".join(f"{name}={format_value(value)}" for name, value in prior.params.items())
    return {"latent": family, "prior": f"{family}({params})"}


def schedule_hparams(schedule: TemperatureSchedule) -> str:
    """The ``tau_schedule`` column, e.g. ``exponential(tau_min=0.5, rate=0.0005)`` or ``constant``."""
    args = [f"{name}={format_value(getattr(schedule, name))}" for name in _SCHEDULE_ARGS[schedule.kind]]
    if schedule.interval != 1:
        args.append(f"interval={schedule.interval}")
    return f"{schedule.kind}({', '.join(args)})" if args else schedule.kind


def optimizer_hparams(trainer: pl.Trainer, model: pl.LightningModule) -> dict[str, HParam]:
    """``optimizer`` and ``lr``: the first optimizer's, or, before one exists (an evaluation), the configured one's."""
    if trainer.optimizers:
        optimizer = trainer.optimizers[0]
        group = optimizer.param_groups[0]
        return {"optimizer": type(optimizer).__name__, "lr": float(group.get("initial_lr", group["lr"]))}
    config = model.hparams_initial.get("optimizer")
    if not isinstance(config, Mapping) or "class_path" not in config:
        return {}
    values: dict[str, HParam] = {"optimizer": config["class_path"].rpartition(".")[2]}
    lr = (config.get("init_args") or {}).get("lr")
    return values if lr is None else {**values, "lr": float(lr)}


def run_hparams(
    trainer: pl.Trainer, model: pl.LightningModule, schedule: TemperatureSchedule | None = None
) -> dict[str, HParam]:
    """Every column this run has a value for (a subset of :data:`COLUMNS`).

    Args:
        trainer: The trainer (its data module, optimizers and seed).
        model: The model; its ``latent_hparams()``, if it has one, gives the latent's and estimator's columns.
        schedule: The temperature schedule, shown for a model whose latent has a temperature.
    """
    datamodule = trainer.datamodule
    values: dict[str, HParam] = {"model": type(model).__name__}
    if datamodule is not None:
        values["data"] = type(datamodule).__name__
    latent_hparams = getattr(model, "latent_hparams", None)
    if callable(latent_hparams):
        values.update(latent_hparams())
    if schedule is not None and "tau" in values and "tau_schedule" not in values:
        values["tau_schedule"] = schedule_hparams(schedule)
        if schedule.tau0 is not None:
            values["tau"] = float(schedule.tau0)
    values.update(optimizer_hparams(trainer, model))
    batch_size = getattr(datamodule, "batch_size", None)
    if isinstance(batch_size, int):
        values["batch_size"] = float(batch_size)
    if os.environ.get("PL_GLOBAL_SEED") is not None:  # set by seed_everything (the CLI's seed_everything)
        values["seed"] = float(os.environ["PL_GLOBAL_SEED"])
    return {name: value for name, value in values.items() if name in COLUMNS}


def hparams_metrics(model: pl.LightningModule) -> tuple[str, ...]:
    """The metrics a model names in ``hparams_metrics`` (``val/*`` lower is better), else :data:`DEFAULT_METRICS`."""
    return tuple(getattr(model, "hparams_metrics", DEFAULT_METRICS))


def metric_tag(metric: str) -> str:
    """The ``hp/*`` tag of a metric: ``val/loss -> hp/best_val_loss`` (best so far), ``test/x -> hp/test_x``."""
    stage, _, name = metric.partition("/")
    return f"hp/best_val_{name}" if stage == "val" else f"hp/{stage}_{name}"


def metric_name(metric: str) -> str:
    """How the summary and the table's header show a metric: ``best val/loss``, ``test/nll_iw``."""
    return f"best {metric}" if metric.startswith("val/") else metric


def hparams_summaries(values: Mapping[str, HParam], metrics: Sequence[str]) -> list[Summary]:
    """The hparams plugin's experiment (all :data:`COLUMNS` and the metrics' tags) and this run's session start.

    Args:
        values: This run's values (keys from :data:`COLUMNS`).
        metrics: The metrics whose :func:`metric_tag` scalars the table shows.

    Returns:
        Two summaries for a TensorBoard event file.
    """
    columns = [
        api_pb2.HParamInfo(name=name, type=api_pb2.DATA_TYPE_FLOAT64 if kind is float else api_pb2.DATA_TYPE_STRING)
        for name, kind in COLUMNS.items()
    ]
    metric_infos = [
        api_pb2.MetricInfo(name=api_pb2.MetricName(tag=metric_tag(m)), display_name=metric_name(m)) for m in metrics
    ]
    experiment = api_pb2.Experiment(hparam_infos=columns, metric_infos=metric_infos)
    start = plugin_data_pb2.SessionStartInfo(start_time_secs=time.time())
    for name, value in values.items():
        if COLUMNS[name] is float:
            start.hparams[name].number_value = float(value)
        else:
            start.hparams[name].string_value = str(value)
    return [
        _summary(metadata.EXPERIMENT_TAG, plugin_data_pb2.HParamsPluginData(experiment=experiment)),
        _summary(metadata.SESSION_START_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_start_info=start)),
    ]


def _summary(tag: str, data: plugin_data_pb2.HParamsPluginData) -> Summary:
    return Summary(value=[Summary.Value(tag=tag, metadata=metadata.create_summary_metadata(data))])
