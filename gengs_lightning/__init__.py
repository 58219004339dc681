"""Generalized Gumbel-Softmax gradient estimators for discrete count latents, on PyTorch Lightning."""

__version__ = "0.1.0"
