"""NVDM, the Gaussian reference topic model, on NVPDEF's inference network, decoder and evaluation."""

from __future__ import annotations

from collections.abc import Sequence

import pytorch_lightning as pl
import torch
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics import MeanMetric

from gengs_lightning.callbacks.resume import ExactResumeMixin
from gengs_lightning.hparams import HParam
from gengs_lightning.models.step_watch import non_finite_watch, raise_if_a_loss_was_not_finite, writes_logs_now
from gengs_lightning.models.topic_model import TopicModelMixin, check_sizes, inference_network, multinomial_nll


class NVDM(TopicModelMixin, ExactResumeMixin, pl.LightningModule):
    """Neural variational document model (Miao, Yu and Blunsom 2016) with NVPDEF's networks.

    ``z ~ N(0, I)`` in ``R^K``, words ``x ~ Multinomial(softmax(R z + b))``; the posterior
    ``q(z | x) = N(mu(x), diag sigma(x)^2)`` comes from the same inference network as
    :class:`~gengs_lightning.models.NVPDEF` (an MLP on ``log(1 + counts)``) with a mean head and a
    log-standard-deviation head (started at zero, so ``sigma = 1``, as in NVDM). Training uses the
    reparameterised sample ``z = mu + sigma * eps`` and the closed-form Gaussian KL; evaluation draws
    one sample, like NVPDEF's exact draw, so the two report the same bound with the same code
    (:class:`TopicModelMixin`). It is a sibling of the discrete-latent models, not one of them: its
    latent is continuous, it has no estimator, prior table or temperature, and the discrete interfaces
    stay as they are. Like them it resumes exactly (:class:`~gengs_lightning.callbacks.resume.ExactResumeMixin`).

    Logged like NVPDEF: ``{train,val,test}/loss`` (negative ELBO per document), ``*/recon``, ``*/kl``,
    the perplexities, ``test/npmi`` and the topic table; its row of TensorBoard's HPARAMS table has the
    latent ``gaussian`` and no estimator (:meth:`latent_hparams`).

    Args:
        vocab_size: Number of words ``V``.
        topics: Dimension ``K`` of the latent (the number of topics).
        hidden: Hidden widths of the inference network.
        activation: Hidden activation, one of ``relu, tanh, elu, leaky_relu, softplus, gelu``.
        dropout: Dropout probability after every hidden layer of the inference network (0: none).
        batch_norm: Batch normalisation before every hidden activation of the inference network.
        num_samples: Reparameterised samples per document in training.
        top_words: Words per topic shown and used for coherence.
        decoder_bias: Start of the decoder bias: ``zeros`` or ``unigram``.
        optimizer: Optimizer factory.
        lr_scheduler: Optional learning-rate scheduler factory.

    Raises:
        ValueError: For sizes that are not integers >= 1, an unknown activation or decoder bias, or a dropout
            outside [0, 1).
    """

    def __init__(
        self,
        vocab_size: int = 2000,
        topics: int = 50,
        hidden: Sequence[int] = (500, 500),
        activation: str = "relu",
        dropout: float = 0.0,
        batch_norm: bool = False,
        num_samples: int = 1,
        top_words: int = 10,
        decoder_bias: str = "zeros",
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        sizes = {"vocab_size": vocab_size, "topics": topics, "num_samples": num_samples, "top_words": top_words}
        check_sizes({**sizes, **{f"hidden[{i}]": w for i, w in enumerate(hidden)}})
        self.vocab_size, self.topics, self.num_samples = vocab_size, topics, num_samples
        self.top_words, self.decoder_bias = top_words, decoder_bias
        self.optimizer_factory, self.lr_scheduler_factory = optimizer, lr_scheduler
        self.inference = inference_network(vocab_size, hidden, activation, dropout, batch_norm)
        self.mean_head = nn.Linear(hidden[-1], topics)
        self.log_sigma_head = nn.Linear(hidden[-1], topics)
        nn.init.zeros_(self.log_sigma_head.weight)
        nn.init.zeros_(self.log_sigma_head.bias)
        self.decoder = nn.Linear(topics, vocab_size)
        self.eval_metrics = nn.ModuleDict(
            {f"{s}_{n}": MeanMetric() for s in ("val", "test") for n in ("loss", "recon", "kl")}
        )
        self.init_topic_metrics(topics)
        self._loss_watch = non_finite_watch()

    def latent_hparams(self) -> dict[str, HParam]:
        """The latent's columns of the HPARAMS table: a Gaussian, no estimator (:mod:`gengs_lightning.hparams`)."""
        return {
            "latent": "gaussian",
            "prior": "normal(0, I)",
            "estimator": "none",
            "num_samples": float(self.num_samples),
        }

    def encode(self, batch: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log standard deviation of ``q(z | x)``, each ``(B, K)``."""
        self.check_batch(batch)
        hidden = self.inference(torch.log1p(batch))
        return self.mean_head(hidden), self.log_sigma_head(hidden)

    def losses(self, batch: Tensor, num_samples: int) -> dict[str, Tensor]:
        """Per-document ``recon`` (mean over samples), ``kl`` and ``loss = recon + kl``, each ``(B,)``."""
        mean, log_sigma = self.encode(batch)
        noise = torch.randn((num_samples, *mean.shape), dtype=mean.dtype, device=mean.device)
        z = mean + log_sigma.exp() * noise
        recon = multinomial_nll(self.decoder, batch, z).mean(0)
        kl = 0.5 * (mean.square() + (2 * log_sigma).exp() - 1.0 - 2 * log_sigma).sum(-1)
        return {"loss": recon + kl, "recon": recon, "kl": kl}

    def training_step(self, batch: Tensor, batch_idx: int) -> Tensor:
        values = self.losses(batch, self.num_samples)
        loss = values["loss"].mean()
        self._loss_watch.update(loss, (self.global_step, self.current_epoch, batch_idx))
        if writes_logs_now(self.trainer, self.global_step):
            raise_if_a_loss_was_not_finite(self._loss_watch, "lower the learning rate")
        for name, value in values.items():
            self.log(f"train/{name}", value.mean(), prog_bar=name == "loss", batch_size=batch.shape[0])
        return loss

    def _evaluate(self, batch: Tensor, stage: str) -> None:
        values = self.losses(batch, 1)
        for name, value in values.items():
            metric = self.eval_metrics[f"{stage}_{name}"]
            metric.update(value)
            self.log(f"{stage}/{name}", metric, prog_bar=name == "loss")
        self.update_topic_metrics(stage, values["loss"], batch)

    def validation_step(self, batch: Tensor, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: Tensor, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.parameters())
        if self.lr_scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.lr_scheduler_factory(optimizer)}
