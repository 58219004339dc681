"""What every document model shares: its inference network, decoder, perplexities, coherence and topics.

NVPDEF (count topics, any estimator) and NVDM (Gaussian topics, the reference it is compared with) use
one inference network on ``log(1 + counts)``, one decoder ``softmax(R z + b)`` over the vocabulary and
one evaluation code, so that a study compares the latents and nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from pytorch_lightning.loggers import TensorBoardLogger
from torch import Tensor, nn

from gengs_lightning.checks import check_choice, check_int, check_number
from gengs_lightning.metrics import Perplexity, TopicCoherence
from gengs_lightning.models.vae import ACTIVATIONS

#: Initialisations of the decoder bias ``b``: zeros, or the training words' log-frequencies.
DECODER_BIASES = ("zeros", "unigram")


def inference_network(
    vocab_size: int, hidden: Sequence[int], activation: str, dropout: float = 0.0, batch_norm: bool = False
) -> nn.Sequential:
    """The MLP ``V -> hidden[0] -> ... -> hidden[-1]`` on ``log(1 + x)``, activation after every layer.

    Each hidden layer is ``Linear``, then ``BatchNorm1d`` if ``batch_norm``, the activation, and ``Dropout``
    if ``dropout > 0`` (the regularisers of ProdLDA-style inference networks; both off by default, which
    gives the plain MLP of NVDM).

    Raises:
        ValueError: For an unknown activation or a dropout outside ``[0, 1)``, naming the argument.
    """
    check_choice("activation", activation, tuple(ACTIVATIONS))
    check_number("dropout", dropout, 0, 1, low_closed=True)
    layers: list[nn.Module] = []
    for fan_in, fan_out in zip([vocab_size, *hidden[:-1]], hidden, strict=True):
        layers.append(nn.Linear(fan_in, fan_out))
        if batch_norm:
            layers.append(nn.BatchNorm1d(fan_out))
        layers.append(ACTIVATIONS[activation]())
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def check_sizes(sizes: dict[str, Any]) -> None:
    """Every value an integer >= 1.

    Raises:
        ValueError: Naming the first that is not (:func:`~gengs_lightning.checks.check_int`).
    """
    for name, value in sizes.items():
        check_int(name, value, 1)


def multinomial_nll(decoder: nn.Linear, batch: Tensor, z: Tensor) -> Tensor:
    """``-log p(x | z)`` of the multinomial logistic regression ``softmax(R z + b)``, without the coefficient."""
    return -(batch * F.log_softmax(decoder(z), dim=-1)).sum(-1)


class TopicModelMixin:
    """Perplexities, NPMI, topic tables and the decoder-bias start of a document model.

    The model sets :attr:`vocab_size`, :attr:`top_words` and :attr:`decoder_bias`, defines ``decoder``
    (``nn.Linear(K, vocab_size)``, whose weight columns are the topics) and calls
    :meth:`init_topic_metrics` in ``__init__`` and :meth:`update_topic_metrics` in its validation and
    test steps with the per-document losses. It then logs ``val/perplexity``, ``val/perplexity_doc``,
    ``test/perplexity``, ``test/perplexity_doc`` (NVDM's two definitions, exact under DDP) and
    ``test/npmi``, and every validation epoch each topic's top words in TensorBoard's TEXT tab. TensorBoard's
    HPARAMS table and the run summary show the best ``val/perplexity`` and ``val/loss`` and the test values.
    """

    #: Metrics of TensorBoard's HPARAMS table and of the run summary: ``val/*`` at their best, ``test/*``.
    hparams_metrics: tuple[str, ...] = (
        "val/perplexity",
        "val/loss",
        "test/perplexity",
        "test/perplexity_doc",
        "test/loss",
        "test/npmi",
    )
    decoder: nn.Linear
    vocab_size: int
    top_words: int
    decoder_bias: str

    def init_topic_metrics(self, num_topics: int) -> None:
        """Create the evaluation metrics (call once the decoder exists)."""
        check_choice("decoder_bias", self.decoder_bias, DECODER_BIASES)
        if self.top_words > self.vocab_size:
            raise ValueError(f"top_words={self.top_words} exceeds vocab_size={self.vocab_size}")
        self.val_perplexity = Perplexity()
        self.val_perplexity_doc = Perplexity(per_document=True)
        self.test_perplexity = Perplexity()
        self.test_perplexity_doc = Perplexity(per_document=True)
        self.test_npmi = TopicCoherence(num_topics, self.top_words)

    def check_batch(self, batch: Tensor) -> None:
        """Raise a clear error for a batch that is not ``(B, vocab_size)`` bags of words."""
        if batch.dim() != 2 or batch.shape[-1] != self.vocab_size:
            raise ValueError(
                f"{type(self).__name__} expects bags of words of shape (batch, {self.vocab_size}), got "
                f"{tuple(batch.shape)}; set model.vocab_size to the data's vocabulary size"
            )

    def setup(self, stage: str) -> None:
        """Check ``vocab_size`` against the data and, for ``fit``, start the decoder bias as configured.

        With ``decoder_bias="unigram"`` the bias starts at the log-frequencies of the words in the
        training documents (the usual start of NVDM-style decoders); a checkpoint loaded afterwards
        (a resumed run) overwrites it.

        Raises:
            ValueError: Naming both sizes and the flag to set, if they differ.
        """
        super().setup(stage)
        datamodule = self.trainer.datamodule if self.trainer is not None else None
        data_size = getattr(datamodule, "vocab_size", None)
        if data_size is not None and data_size != self.vocab_size:
            raise ValueError(
                f"the model's vocab_size is {self.vocab_size} but the data's vocabulary "
                f"({type(datamodule).__name__}) has {data_size} words; set --model.init_args.vocab_size={data_size}"
            )
        if stage == "fit" and self.decoder_bias == "unigram":
            if not hasattr(datamodule, "word_frequencies"):
                raise ValueError("decoder_bias='unigram' needs a datamodule with word_frequencies() (BagOfWords)")
            frequencies = datamodule.word_frequencies().to(self.decoder.bias)
            with torch.no_grad():
                self.decoder.bias.copy_(torch.log(frequencies + 1.0) - torch.log(frequencies.sum() + self.vocab_size))

    def update_topic_metrics(self, stage: str, losses: Tensor, batch: Tensor) -> None:
        """Add a batch's per-document losses ``(B,)`` to the stage's perplexities (and NPMI) and log them."""
        words = batch.sum(-1)
        corpus, per_document = getattr(self, f"{stage}_perplexity"), getattr(self, f"{stage}_perplexity_doc")
        corpus.update(losses, words)
        per_document.update(losses, words)
        self.log(f"{stage}/perplexity", corpus, prog_bar=stage == "val")
        self.log(f"{stage}/perplexity_doc", per_document)
        if stage == "test":
            self.test_npmi.update(batch)
            self.log("test/npmi", self.test_npmi)

    def on_test_epoch_start(self) -> None:
        self.test_npmi.set_topics(self.topic_words())

    def topic_words(self) -> Tensor:
        """The ``top_words`` word ids of every topic, ``(K, top_words)``: largest weights of ``R``."""
        return self.decoder.weight.detach().T.topk(self.top_words, dim=-1).indices

    def topic_table(self, vocab: Sequence[str] | None = None) -> str:
        """A markdown table of every topic's top words (word ids without a vocabulary)."""
        rows = ["| topic | top words |", "|---|---|"]
        for k, ids in enumerate(self.topic_words().tolist()):
            words = [vocab[i] if vocab is not None else str(i) for i in ids]
            rows.append(f"| {k} | {' '.join(words)} |")
        return "\n".join(rows)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking or not self.trainer.is_global_zero:
            return
        vocab = self._vocabulary()
        for logger in self.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_text("val/topics", self.topic_table(vocab), self.global_step)

    def _vocabulary(self) -> Sequence[str] | None:
        vocab: Any = getattr(self.trainer.datamodule, "vocab", None) if self.trainer is not None else None
        return vocab if vocab is not None and len(vocab) == self.vocab_size else None
