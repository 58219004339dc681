"""Callbacks: temperature schedules (and, in later issues, gradient and image/topic logging)."""

from gengs_lightning.callbacks.temperature import TemperatureSchedule

__all__ = ["TemperatureSchedule"]
