"""Callbacks: temperature schedules (and, in later issues, gradient and image/topic logging)."""

from gengs_lightning.callbacks.compile import CompileModel
from gengs_lightning.callbacks.gradient_monitor import GradientMonitor
from gengs_lightning.callbacks.hparams import HParamsTable
from gengs_lightning.callbacks.prediction_writer import PredictionWriter, read_predictions
from gengs_lightning.callbacks.resume import ExactResume
from gengs_lightning.callbacks.temperature import TemperatureSchedule

__all__ = [
    "CompileModel",
    "ExactResume",
    "GradientMonitor",
    "HParamsTable",
    "PredictionWriter",
    "TemperatureSchedule",
    "read_predictions",
]
