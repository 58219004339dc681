"""Callbacks: temperature schedules (and, in later issues, gradient and image/topic logging)."""

from gengs_lightning.callbacks.gradient_monitor import GradientMonitor
from gengs_lightning.callbacks.temperature import TemperatureSchedule

__all__ = ["GradientMonitor", "TemperatureSchedule"]
