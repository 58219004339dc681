"""The inference network NVPDEF and NVDM share: plain MLP by default, batch norm and dropout on request."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
from helpers import write_corpus
from torch import nn

from gengs_lightning.data import BagOfWords
from gengs_lightning.distributions import Prior
from gengs_lightning.estimators import GenGSImplicit
from gengs_lightning.models import NVDM, NVPDEF
from gengs_lightning.models.topic_model import inference_network


def test_default_network_is_linear_and_activation_per_hidden_layer():
    network = inference_network(30, [16, 8], "tanh")
    assert [type(layer) for layer in network] == [nn.Linear, nn.Tanh, nn.Linear, nn.Tanh]
    assert [layer.out_features for layer in network if isinstance(layer, nn.Linear)] == [16, 8]


def test_batch_norm_normalises_each_hidden_layer_before_its_activation():
    torch.manual_seed(0)
    network = inference_network(30, [16, 8], "relu", batch_norm=True)
    assert [type(layer) for layer in network] == [nn.Linear, nn.BatchNorm1d, nn.ReLU] * 2
    x = torch.log1p(torch.poisson(torch.full((64, 30), 3.0)))
    normalised = network[1](network[0](x))  # training mode: the batch's own statistics, unit weight, zero bias
    torch.testing.assert_close(normalised.mean(0), torch.zeros(16), atol=1e-5, rtol=0)
    torch.testing.assert_close(normalised.var(0, unbiased=False), torch.ones(16), atol=1e-3, rtol=0)


def test_dropout_is_random_in_training_and_off_in_evaluation():
    torch.manual_seed(0)
    network = inference_network(30, [200], "tanh", dropout=0.5)
    assert isinstance(network[-1], nn.Dropout) and network[-1].p == 0.5
    x = torch.ones(4, 30)
    train = network(x)
    zeros = (train == 0).float().mean()
    assert abs(zeros - 0.5) < 4 * math.sqrt(0.25 / 800)  # 800 units, each dropped with probability 1/2
    network.eval()
    torch.testing.assert_close(network(x), network(x))
    assert (network(x) != 0).all()  # tanh of a random affine map is not exactly 0: nothing is dropped


@pytest.mark.parametrize("dropout", [1.0, -0.1, True, "0.2"])
def test_bad_dropout_is_named(dropout):
    with pytest.raises(ValueError, match=r"^dropout must be a number in \[0, 1\), got "):
        NVDM(vocab_size=30, topics=4, hidden=(16,), top_words=3, dropout=dropout)
    with pytest.raises(ValueError, match=r"^dropout must be a number in \[0, 1\), got "):
        NVPDEF(GenGSImplicit(window=6), Prior("poisson", {"rate": 1.0}), vocab_size=30, hidden=(16,), dropout=dropout)


@pytest.mark.parametrize(
    "make",
    [
        lambda **kw: NVDM(vocab_size=30, topics=4, hidden=(16,), top_words=3, **kw),
        lambda **kw: NVPDEF(
            GenGSImplicit(window=6, tau=0.5),
            Prior("poisson", {"rate": 1.0}),
            vocab_size=30,
            topics=(4,),
            hidden=(16,),
            top_words=3,
            **kw,
        ),
    ],
    ids=["NVDM", "NVPDEF"],
)
def test_both_models_train_and_test_with_batch_norm_and_dropout(tmp_path, make):
    torch.manual_seed(0)
    model = make(dropout=0.2, batch_norm=True, optimizer=lambda params: torch.optim.Adam(params, lr=0.01))
    assert sum(isinstance(m, nn.BatchNorm1d) for m in model.inference) == 1
    data = BagOfWords(str(write_corpus(tmp_path / "corpus")), val_size=20, batch_size=16, eval_batch_size=30)
    trainer = pl.Trainer(max_epochs=15, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.fit(model, datamodule=data)
    (result,) = trainer.test(model, datamodule=data, verbose=False)
    assert math.isfinite(result["test/perplexity"])
    # each document draws from one theme of 15 words: a model that learned the themes beats the uniform 30
    assert result["test/perplexity"] < 25
