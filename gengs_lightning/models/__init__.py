"""LightningModules: the base class for discrete-latent models and the paper's models."""

from gengs_lightning.models.base import DiscreteLatentModule
from gengs_lightning.models.nvdm import NVDM
from gengs_lightning.models.nvpdef import NVPDEF
from gengs_lightning.models.toy import ToyTask
from gengs_lightning.models.vae import VAE

__all__ = ["NVDM", "NVPDEF", "VAE", "DiscreteLatentModule", "ToyTask"]
