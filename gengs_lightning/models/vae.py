"""Variational autoencoder whose every latent dimension is a count (NeurIPS Section 6.2, Table 1)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from pytorch_lightning.loggers import TensorBoardLogger
from torch import Tensor, nn
from torchmetrics import MeanMetric

from gengs_lightning.checks import check_choice, check_int
from gengs_lightning.distributions import Prior
from gengs_lightning.estimators import Estimator
from gengs_lightning.models.base import DiscreteLatentModule

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
    "softplus": nn.Softplus,
    "gelu": nn.GELU,
}


def mlp(sizes: Sequence[int], activation: str) -> nn.Sequential:
    """Linear layers of the given sizes with ``activation`` between them (none after the last)."""
    check_choice("activation", activation, tuple(ACTIVATIONS))
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        if i:
            layers.append(ACTIVATIONS[activation]())
        layers.append(nn.Linear(fan_in, fan_out))
    return nn.Sequential(*layers)


def image_grid(images: Tensor, columns: int, padding: int = 1) -> Tensor:
    """Tile ``(N, H, W)`` images in [0, 1] into one ``(1, rows * (H + p) + p, columns * (W + p) + p)`` image."""
    count, height, width = images.shape
    rows = math.ceil(count / columns)
    grid = images.new_ones(1, rows * (height + padding) + padding, columns * (width + padding) + padding)
    for index, image in enumerate(images):
        top = padding + (index // columns) * (height + padding)
        left = padding + (index % columns) * (width + padding)
        grid[0, top : top + height, left : left + width] = image
    return grid


class VAE(DiscreteLatentModule):
    """VAE with a count prior on every latent dimension and a Bernoulli decoder on binary images.

    ``q(z | x)`` comes from an MLP encoder through the estimator (explicit: the family's parameter per
    dimension; implicit: the window's logits), ``p(x | z)`` is a Bernoulli MLP decoder of the latent
    counts, and the loss is the negative ELBO ``E_q[-log p(x | z)] + KL(q || p)`` with the KL given by
    the estimator (closed form on the truncated window for GenGS). Logged: ``*/loss`` (negative ELBO),
    ``*/recon``, ``*/kl``, ``train/tau`` and truncation statistics; ``test/nll_iw`` (importance-weighted
    ``-log p(x)`` with ``iw_samples`` exact posterior samples); every validation epoch on rank zero,
    TensorBoard images of inputs over reconstructions and of decoded prior samples, and a histogram of
    latent values. TensorBoard's HPARAMS table shows the best ``val/loss``, ``test/loss`` and ``test/nll_iw``.

    The encoder's output bias starts at ``estimator.raw_like(prior)``, so that ``q(z | x) = p(z)``
    before training (the KL starts at zero, the latents start in the prior's range).

    Args:
        estimator: Gradient estimator.
        prior: Prior of every latent dimension (a list-valued parameter gives one per dimension).
        data_dim: Number of pixels.
        latent_dim: Number of latent count dimensions.
        encoder_hidden: Hidden layer widths of the encoder.
        decoder_hidden: Hidden layer widths of the decoder (default: the encoder's, reversed).
        activation: Hidden activation, one of :data:`ACTIVATIONS`.
        image_shape: ``(height, width)`` for image logging; ``None`` turns images off.
        iw_samples: Importance samples per test example for ``test/nll_iw``.
        num_images: Images per logged grid.
        optimizer: Optimizer factory.
        lr_scheduler: Optional learning-rate scheduler factory.

    Raises:
        ValueError: For sizes that are not integers >= 1, an unknown activation or an image shape that does not match
            ``data_dim``.
    """

    objective_name = "recon"
    hparams_metrics = ("val/loss", "test/loss", "test/nll_iw")

    def __init__(
        self,
        estimator: Estimator,
        prior: Prior,
        data_dim: int = 784,
        latent_dim: int = 20,
        encoder_hidden: Sequence[int] = (512, 256),
        decoder_hidden: Sequence[int] | None = None,
        activation: str = "relu",
        image_shape: tuple[int, int] | None = (28, 28),
        iw_samples: int = 100,
        num_images: int = 16,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
    ):
        super().__init__(estimator, prior, optimizer, lr_scheduler)
        self.save_hyperparameters()
        decoder_hidden = tuple(reversed(encoder_hidden)) if decoder_hidden is None else tuple(decoder_hidden)
        sizes = {"data_dim": data_dim, "latent_dim": latent_dim, "iw_samples": iw_samples, "num_images": num_images}
        sizes.update({f"encoder_hidden[{i}]": w for i, w in enumerate(encoder_hidden)})
        sizes.update({f"decoder_hidden[{i}]": w for i, w in enumerate(decoder_hidden)})
        for name, value in sizes.items():
            check_int(name, value, 1)
        if image_shape is not None and math.prod(image_shape) != data_dim:
            raise ValueError(
                f"image_shape {tuple(image_shape)} has {math.prod(image_shape)} pixels but data_dim is {data_dim}"
            )
        self.data_dim, self.latent_dim = data_dim, latent_dim
        self.image_shape = None if image_shape is None else tuple(image_shape)
        self.iw_samples, self.num_images = iw_samples, num_images
        raw_size = estimator.raw_size(prior)
        self.encoder = mlp([data_dim, *encoder_hidden, latent_dim * raw_size], activation)
        self.decoder = mlp([latent_dim * prior.event_shape.numel(), *decoder_hidden, data_dim], activation)
        with torch.no_grad():
            start = estimator.raw_like(prior).expand(latent_dim, raw_size)
            self.encoder[-1].bias.copy_(start.reshape(-1))
        self.test_nll_iw = MeanMetric()
        self._image_batch: Tensor | None = None

    def encode(self, batch: Tensor) -> Tensor:
        if batch.dim() != 2 or batch.shape[-1] != self.data_dim:
            raise ValueError(
                f"VAE expects flattened images of shape (batch, {self.data_dim}), got {tuple(batch.shape)}; "
                "set model.data_dim to the data's number of pixels"
            )
        return self.encoder(batch).unflatten(-1, (self.latent_dim, -1))

    def encoder_parameters(self):
        return self.encoder.parameters()

    def decode(self, z: Tensor) -> Tensor:
        """Bernoulli logits ``(S, B, data_dim)`` for latent samples ``(S, B, latent_dim, *event)``."""
        return self.decoder(z.flatten(2))

    def objective(self, batch: Tensor, z: Tensor) -> Tensor:
        """``-log p(x | z)`` of the Bernoulli decoder, summed over pixels: ``(S, B)``."""
        logits = self.decode(z)
        return F.binary_cross_entropy_with_logits(logits, batch.expand_as(logits), reduction="none").sum(-1)

    def validation_step(self, batch: Tensor, batch_idx: int):
        if batch_idx == 0:
            self._image_batch = batch[: self.num_images]
        return super().validation_step(batch, batch_idx)

    def test_step(self, batch: Tensor, batch_idx: int):
        out = super().test_step(batch, batch_idx)
        self.test_nll_iw.update(self.importance_weighted_nll(batch, self.iw_samples))
        self.log("test/nll_iw", self.test_nll_iw)
        return out

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking or not self.trainer.is_global_zero or self._image_batch is None:
            return
        loggers = [logger for logger in self.loggers if isinstance(logger, TensorBoardLogger)]
        if not loggers:
            return
        images = self._images(self._image_batch)
        for logger in loggers:
            for name, value in images.items():
                if name == "val/latent_values":
                    logger.experiment.add_histogram(name, value, self.global_step)
                else:
                    logger.experiment.add_image(name, value, self.global_step)

    @torch.no_grad()
    def _images(self, batch: Tensor) -> dict[str, Tensor]:
        """Input/reconstruction and prior-sample grids, and the latent values behind them."""
        posterior = self.estimator.posterior(self.encode(batch), self.prior)
        z = posterior.sample((1,))
        prior = self.estimator.prior_distribution(posterior, self.prior)
        z_prior = prior.expand(posterior.batch_shape[1:]).sample((1, batch.shape[0]))
        result = {"val/latent_values": z.float().flatten()}
        if self.image_shape is not None:
            shape = (-1, *self.image_shape)
            reconstructions = torch.sigmoid(self.decode(z))[0]
            pairs = torch.cat([batch.reshape(shape), reconstructions.reshape(shape)])
            result["val/inputs_and_reconstructions"] = image_grid(pairs.float().cpu(), columns=batch.shape[0])
            samples = torch.sigmoid(self.decode(z_prior))[0].reshape(shape)
            result["val/prior_samples"] = image_grid(samples.float().cpu(), columns=int(math.sqrt(batch.shape[0])) or 1)
        return result
