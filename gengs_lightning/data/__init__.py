"""LightningDataModules: toy targets (and, in later issues, images and bags of words)."""

from gengs_lightning.data.toy import ToyTargets

__all__ = ["ToyTargets"]
