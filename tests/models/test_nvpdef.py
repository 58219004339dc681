"""NVPDEF (NeurIPS Section 6.3): 1- and 2-stacked training, the stacked ELBO, topics, bad input."""

from __future__ import annotations

import itertools
import math

import pytest
import pytorch_lightning as pl
import torch
from helpers import event_dirs, write_corpus
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from gengs_lightning.data import BagOfWords
from gengs_lightning.distributions import Prior
from gengs_lightning.estimators import GenGSExplicit, GenGSImplicit
from gengs_lightning.models import NVPDEF


def tiny_model(estimator, topics=(4,), **kwargs) -> NVPDEF:
    options = {"vocab_size": 30, "topics": topics, "hidden": (16,), "top_words": 3}
    return NVPDEF(estimator, Prior("poisson", {"rate": 1.0}), **{**options, **kwargs})


@pytest.mark.parametrize("topics", [(4,), (4, 2)], ids=["1-stacked", "2-stacked"])
@pytest.mark.parametrize(
    "estimator",
    [lambda: GenGSExplicit(window=8, tau=0.5, num_samples=2), lambda: GenGSImplicit(window=8, tau=0.5)],
    ids=["explicit", "implicit"],
)
def test_trains_validates_and_tests_with_topics_and_perplexity(tmp_path, topics, estimator):
    torch.manual_seed(0)
    model = tiny_model(estimator(), topics)
    data = BagOfWords(str(write_corpus(tmp_path / "corpus")), val_size=20, batch_size=16, eval_batch_size=30)
    logger = pl.loggers.TensorBoardLogger(tmp_path / "logs", default_hp_metric=False)
    trainer = pl.Trainer(max_epochs=2, logger=logger, enable_checkpointing=False, enable_progress_bar=False)
    trainer.fit(model, datamodule=data)
    (result,) = trainer.test(model, datamodule=data, verbose=False)
    assert {"test/loss", "test/kl", "test/perplexity", "test/npmi"} <= set(result)
    assert math.isfinite(result["test/perplexity"]) and result["test/perplexity"] > 1
    assert -1 <= result["test/npmi"] <= 1
    events = EventAccumulator(str(event_dirs(tmp_path / "logs")[0]), size_guidance={"tensors": 0})
    events.Reload()
    table = events.Tensors("val/topics/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert table.startswith("| topic | top words |") and "word" in table


def test_perplexity_is_exp_of_the_loss_per_word_and_per_document(tmp_path):
    torch.manual_seed(0)
    model = tiny_model(GenGSExplicit(window=8, tau=0.5))
    data = BagOfWords(str(write_corpus(tmp_path / "corpus")), val_size=20, eval_batch_size=7)
    (result,) = pl.Trainer(logger=False, enable_progress_bar=False).test(model, datamodule=data, verbose=False)
    documents = torch.cat(list(data.test_dataloader()))
    # test/loss is the mean per-document loss and the perplexity uses the same losses: exp(sum loss / words)
    expected = math.exp(result["test/loss"] * documents.shape[0] / documents.sum().item())
    assert result["test/perplexity"] == pytest.approx(expected, rel=1e-5)
    # every document has 20 words, so the per-document average (NVDM, paper Table 2) is the same number
    assert (documents.sum(-1) == 20).all()
    assert result["test/perplexity_doc"] == pytest.approx(expected, rel=1e-5)


def exact_stacked_loss(model: NVPDEF, x: torch.Tensor) -> torch.Tensor:
    """-ELBO of a tiny 2-layer model by enumerating both layers' truncated posteriors (B,)."""
    params = model.encode(x)
    window = model.estimator.window
    q_top = model.estimator.posterior(params[1], model.prior)
    p_top = model.estimator.prior_distribution(q_top, model.prior)
    top_kl = torch.distributions.kl_divergence(q_top, p_top).sum(-1)
    values = q_top.outcomes
    total = torch.zeros(x.shape[0])
    for z_top in itertools.product(values.tolist(), repeat=model.topics[1]):
        z_top = torch.tensor(z_top)
        weight = q_top.log_prob(z_top.expand(x.shape[0], -1)).sum(-1).exp()
        rate = z_top @ torch.nn.functional.softplus(model.layer_weights[0]).T + model.rate_offset
        conditional = model.prior.with_params(rate=rate.expand(x.shape[0], -1))
        q_low = model.estimator.posterior(params[0], conditional)
        lower_kl = torch.distributions.kl_divergence(q_low, conditional.truncated(window)).sum(-1)
        recon = torch.zeros(x.shape[0])
        for z_low in itertools.product(values.tolist(), repeat=model.topics[0]):
            z_low = torch.tensor(z_low, dtype=torch.float32).expand(x.shape[0], -1)
            recon += q_low.log_prob(z_low).sum(-1).exp() * model.objective(x, z_low[None])[0]
        total += weight * (recon + lower_kl)
    return total + top_kl


def test_stacked_loss_is_an_unbiased_estimate_of_the_stacked_negative_elbo():
    torch.manual_seed(0)
    model = tiny_model(GenGSExplicit(window=4, tau=0.5), topics=(2, 1)).eval()
    for p in model.parameters():
        p.data.mul_(2.0)
    x = torch.poisson(torch.full((3, 30), 0.4))
    exact = exact_stacked_loss(model, x)
    with torch.no_grad():
        draws = model.estimate(x.repeat(20000, 1)).loss.view(20000, 3)
    error = draws.std(0) / math.sqrt(draws.shape[0])
    assert torch.all((draws.mean(0) - exact).abs() < 4 * error), (draws.mean(0), exact, error)
    assert torch.all(error < 0.05 * exact.abs())  # the check is sharp


def test_lower_layer_gradient_reaches_the_upper_layer_and_the_weights():
    torch.manual_seed(0)
    model = tiny_model(GenGSExplicit(window=6, tau=0.5), topics=(3, 2))
    out = model.estimate(torch.poisson(torch.full((5, 30), 0.5)))
    out.surrogate.backward()
    assert model.layer_weights[0].grad.abs().sum() > 0
    assert all(head.weight.grad.abs().sum() > 0 for head in model.heads)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"topics": []}, "topics needs at least one layer"),
        ({"topics": [4, 0]}, "topics[1] must be an integer >= 1, got 0"),
        ({"activation": "swish"}, "unknown activation 'swish'"),
        ({"rate_offset": 0.0}, "rate_offset must be a finite number > 0, got 0.0"),
        ({"rate_offset": float("inf")}, "rate_offset must be a finite number > 0, got inf"),
        ({"top_words": 31}, "top_words=31 exceeds vocab_size=30"),
    ],
)
def test_bad_arguments_are_rejected(kwargs, message):
    with pytest.raises(ValueError) as error:
        tiny_model(GenGSExplicit(window=6), **kwargs)
    assert message in str(error.value)


def test_multi_layer_needs_poisson_and_data_must_match_the_vocabulary():
    with pytest.raises(ValueError, match="a multi-layer NVPDEF has Poisson layers; got a geometric prior"):
        NVPDEF(GenGSExplicit(window=6), Prior("geometric", {"probs": 0.5}), vocab_size=30, topics=(4, 2))
    model = tiny_model(GenGSExplicit(window=6))
    with pytest.raises(ValueError, match=r"bags of words of shape \(batch, 30\), got \(2, 31\)"):
        model.estimate(torch.zeros(2, 31))
