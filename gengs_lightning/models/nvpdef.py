"""Neural variational Poisson deep exponential family topic model (NeurIPS Section 6.3, Figure 5)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from gengs_lightning.checks import check_number
from gengs_lightning.distributions import Prior
from gengs_lightning.estimators import Estimator, EstimatorOutput
from gengs_lightning.models.base import DiscreteLatentModule
from gengs_lightning.models.topic_model import TopicModelMixin, check_sizes, inference_network, multinomial_nll


class NVPDEF(TopicModelMixin, DiscreteLatentModule):
    """NVPDEF: Poisson topic counts per document, a multinomial logistic regression over the vocabulary.

    Generative process with ``L`` layers of topic counts (``topics`` lists ``K_1, ..., K_L`` from the
    bottom): ``z_L ~ prior`` (e.g. Poisson(lambda) per super-topic), ``z_l | z_{l+1} ~ Poisson(W_l
    z_{l+1} + offset)`` with positive weights ``W_l = softplus(A_l)`` (super-topic to sub-topic, the
    Poisson deep exponential family of Ranganath et al. 2015), and the words of a document
    ``x ~ Multinomial(softmax(R z_1 + b))`` (multinomial logistic regression, NVDM). The inference
    network maps the bag of words to ``q(z_l | x)`` for every layer (one shared MLP, one head per
    layer). The loss per document is the negative ELBO; the KL of each layer is the estimator's (closed
    form on the truncated window for GenGS) against the conditional prior given the sampled layer
    above. Layers are estimated top-down: the top layer's objective is the lower layers' loss, passed
    on with the lower layers' gradient (their surrogate), so any estimator works at every layer.

    Logged: ``*/loss`` (negative ELBO per document), ``*/recon``, ``*/kl``, ``val/perplexity`` and
    ``test/perplexity`` (``exp(sum_d loss_d / sum_d N_d)``, exact under DDP), ``val/perplexity_doc`` and
    ``test/perplexity_doc`` (``exp(mean_d loss_d / N_d)``, the per-document average that NVDM and the
    paper's Table 2 report: journal Section 6.3, "D is the total number of documents"), ``test/npmi`` (NPMI
    coherence of every bottom topic's top words over the test documents), and every validation epoch
    on rank zero a TensorBoard text table of each topic's top words. With more than one layer,
    ``*/recon`` and ``*/kl`` are the top layer's terms: ``*/kl`` its KL, ``*/recon`` its objective, i.e.
    the negative ELBO of the layers below given its counts (the reconstruction plus the lower layers'
    KL); ``*/loss`` and the perplexities are always the whole model's.

    Args:
        estimator: Gradient estimator, used at every layer.
        prior: Prior of the top layer's counts (a count family; ``poisson`` for more than one layer).
        vocab_size: Number of words ``V`` (the data's vocabulary).
        topics: Topic counts per layer from the bottom, e.g. ``[50]`` or ``[50, 20]``.
        hidden: Hidden widths of the inference network.
        activation: Hidden activation, one of ``relu, tanh, elu, leaky_relu, softplus, gelu``.
        dropout: Dropout probability after every hidden layer of the inference network (0: none).
        batch_norm: Batch normalisation before every hidden activation of the inference network.
        rate_offset: Added to the conditional rates ``W_l z_{l+1}`` so that they stay positive.
        top_words: Words per topic shown and used for coherence.
        decoder_bias: Start of the decoder bias ``b``: ``zeros``, or ``unigram`` (the log-frequencies of the
            training words).
        optimizer: Optimizer factory.
        lr_scheduler: Optional learning-rate scheduler factory.

    Raises:
        ValueError: For sizes that are not integers >= 1, an unknown activation, a dropout outside [0, 1), a
            ``rate_offset`` that is not a finite number > 0, or several layers with a non-Poisson prior.
    """

    objective_name = "recon"

    def __init__(
        self,
        estimator: Estimator,
        prior: Prior,
        vocab_size: int = 2000,
        topics: Sequence[int] = (50,),
        hidden: Sequence[int] = (500, 500),
        activation: str = "relu",
        dropout: float = 0.0,
        batch_norm: bool = False,
        rate_offset: float = 0.01,
        top_words: int = 10,
        decoder_bias: str = "zeros",
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
    ):
        super().__init__(estimator, prior, optimizer, lr_scheduler)
        self.save_hyperparameters()
        sizes = {"vocab_size": vocab_size, "top_words": top_words}
        sizes.update({f"topics[{i}]": k for i, k in enumerate(topics)})
        sizes.update({f"hidden[{i}]": w for i, w in enumerate(hidden)})
        check_sizes(sizes)
        if not topics:
            raise ValueError("topics needs at least one layer, got []")
        if len(topics) > 1 and prior.family.family_name != "poisson":
            raise ValueError(f"a multi-layer NVPDEF has Poisson layers; got a {prior.family.family_name} prior")
        check_number("rate_offset", rate_offset, 0)
        self.vocab_size, self.topics, self.rate_offset = vocab_size, tuple(topics), rate_offset
        self.top_words, self.decoder_bias = top_words, decoder_bias
        raw_size = estimator.raw_size(prior)
        self.inference = inference_network(vocab_size, hidden, activation, dropout, batch_norm)
        self.heads = nn.ModuleList(nn.Linear(hidden[-1], k * raw_size) for k in self.topics)
        self.decoder = nn.Linear(self.topics[0], vocab_size)
        self.layer_weights = nn.ParameterList(
            nn.Parameter(torch.full((lower, upper), -3.0))
            for lower, upper in zip(self.topics, self.topics[1:], strict=False)
        )
        with torch.no_grad():
            start = estimator.raw_like(prior).reshape(-1, raw_size)
            for head, k in zip(self.heads, self.topics, strict=True):
                head.bias.copy_(start.expand(k, raw_size).reshape(-1))
        self.init_topic_metrics(self.topics[0])

    # -- the model ------------------------------------------------------------------------------------
    def encoder_parameters(self):
        yield from self.inference.parameters()
        yield from self.heads.parameters()

    def encode(self, batch: Tensor) -> list[Tensor]:
        """Encoder outputs of every layer, ``(B, K_l, raw_size)`` from the bottom."""
        self.check_batch(batch)
        hidden = self.inference(torch.log1p(batch))
        return [head(hidden).unflatten(-1, (k, -1)) for head, k in zip(self.heads, self.topics, strict=True)]

    def objective(self, batch: Tensor, z: Tensor) -> Tensor:
        """``-log p(x | z_1)`` of the multinomial logistic regression (without the multinomial coefficient)."""
        return multinomial_nll(self.decoder, batch, z)

    def estimate(self, batch: Tensor) -> EstimatorOutput:
        return self._estimate_from(len(self.topics) - 1, self.encode(batch), batch, self.prior)

    def _estimate_from(self, layer: int, params: list[Tensor], batch: Tensor, prior: Prior) -> EstimatorOutput:
        """Estimate layers ``layer, ..., 0`` (top-down) given their encoder outputs and this layer's prior."""
        if layer == 0:
            objective = lambda z: self.objective(batch, z)  # noqa: E731
        else:
            objective = lambda z: self._lower_layers_loss(layer, z, params, batch)  # noqa: E731
        return self.estimator(params[layer], objective, prior, kl=True)

    def _lower_layers_loss(self, layer: int, z: Tensor, params: list[Tensor], batch: Tensor) -> Tensor:
        """Loss of the layers below ``layer`` for samples ``z`` of it, ``(S, B)``, carrying their gradient.

        The value is the lower layers' negative ELBO given ``z``; its gradient is the lower estimator's
        surrogate gradient (for a pathwise estimator the same as the loss's own), so the upper estimator
        can use it whatever the lower one is.
        """
        samples, size = z.shape[:2]
        rates = z @ F.softplus(self.layer_weights[layer - 1]).T + self.rate_offset
        conditional = self.prior.with_params(rate=rates.reshape(samples * size, -1))
        repeated = [p.expand(samples, *p.shape).reshape(samples * size, *p.shape[1:]) for p in params[:layer]]
        words = batch.expand(samples, *batch.shape).reshape(samples * size, -1)
        out = self._estimate_from(layer - 1, repeated, words, conditional)
        carrier = out.loss.detach() + (out.surrogate - out.surrogate.detach())
        return carrier.reshape(samples, size)

    # -- evaluation ---------------------------------------------------------------------------------
    def validation_step(self, batch: Tensor, batch_idx: int) -> EstimatorOutput:
        out = super().validation_step(batch, batch_idx)
        self.update_topic_metrics("val", out.loss, batch)
        return out

    def test_step(self, batch: Tensor, batch_idx: int) -> EstimatorOutput:
        out = super().test_step(batch, batch_idx)
        self.update_topic_metrics("test", out.loss, batch)
        return out
