"""NVDM, the Gaussian reference: its bound, its evaluation shared with NVPDEF, the decoder-bias start, the CLI."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
from helpers import CONFIGS, write_corpus
from torch.distributions import Normal, kl_divergence

from gengs_lightning.cli import main
from gengs_lightning.data import BagOfWords
from gengs_lightning.models import NVDM

QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def tiny(**kwargs) -> NVDM:
    return NVDM(**{"vocab_size": 30, "topics": 4, "hidden": (16,), "top_words": 3, **kwargs})


def test_kl_is_the_closed_form_gaussian_kl_and_recon_the_multinomial_nll():
    torch.manual_seed(0)
    model = tiny()
    torch.nn.init.normal_(model.log_sigma_head.weight)  # a posterior that is not N(mu, 1)
    batch = torch.randint(0, 4, (5, 30)).float()
    mean, log_sigma = model.encode(batch)
    expected_kl = kl_divergence(Normal(mean, log_sigma.exp()), Normal(0.0, 1.0)).sum(-1)
    torch.manual_seed(1)
    values = model.losses(batch, num_samples=3)
    torch.manual_seed(1)
    z = mean + log_sigma.exp() * torch.randn(3, *mean.shape)
    expected_recon = -(batch * torch.log_softmax(model.decoder(z), -1)).sum(-1).mean(0)
    torch.testing.assert_close(values["kl"], expected_kl, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(values["recon"], expected_recon)
    torch.testing.assert_close(values["loss"], expected_recon + expected_kl)


def test_the_posterior_starts_with_unit_standard_deviation():
    mean, log_sigma = tiny().encode(torch.ones(2, 30))
    assert torch.equal(log_sigma, torch.zeros_like(log_sigma))


def test_trains_and_tests_with_nvpdefs_metrics(tmp_path):
    torch.manual_seed(0)
    model = tiny(optimizer=lambda params: torch.optim.Adam(params, lr=0.01))
    data = BagOfWords(str(write_corpus(tmp_path / "corpus")), val_size=20, batch_size=16, eval_batch_size=30)
    trainer = pl.Trainer(max_epochs=20, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.fit(model, datamodule=data)
    (result,) = trainer.test(model, datamodule=data, verbose=False)
    for tag in ("test/loss", "test/recon", "test/kl", "test/perplexity", "test/perplexity_doc", "test/npmi"):
        assert math.isfinite(result[tag]), tag
    # the perplexity is the exponent of the per-word negative ELBO, like NVPDEF's
    words = torch.cat([batch.sum(-1) for batch in data.test_dataloader()])
    assert result["test/perplexity"] == pytest.approx(
        math.exp(result["test/loss"] * len(words) / words.sum()), rel=1e-4
    )
    # each document draws from one theme of 15 words: a model that learned the themes beats the uniform 30
    assert result["test/perplexity"] < 25


def test_unigram_decoder_bias_starts_at_the_training_log_frequencies(tmp_path):
    data = BagOfWords(str(write_corpus(tmp_path / "corpus")), val_size=20, batch_size=16)
    model = tiny(decoder_bias="unigram")
    trainer = pl.Trainer(max_steps=0, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.fit(model, datamodule=data)
    frequencies = data.word_frequencies()
    assert frequencies.sum() == sum(batch.sum() for batch in data.train_dataloader())  # training split only
    expected = torch.log((frequencies + 1) / (frequencies.sum() + 30)).float()
    torch.testing.assert_close(model.decoder.bias.detach(), expected)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"topics": 0}, "topics must be an integer >= 1, got 0"),
        ({"hidden": (16, 0)}, r"hidden\[1\] must be an integer >= 1"),
        ({"activation": "sigmoid"}, "unknown activation 'sigmoid'"),
        ({"decoder_bias": "ones"}, "unknown decoder_bias 'ones'; accepted: zeros, unigram"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny(**kwargs)


def test_nvdm_config_trains_and_tests_through_the_cli(tmp_path):
    corpus = write_corpus(tmp_path / "corpus")
    cli = main(
        [
            "fit",
            "--config",
            str(CONFIGS / "nvdm" / "20news.yaml"),
            f"--data.data_dir={corpus}",
            f"--trainer.logger.init_args.save_dir={tmp_path / 'logs'}",
            "--trainer.max_epochs=2",
            "--model.init_args.vocab_size=30",
            "--model.init_args.topics=4",
            "--model.init_args.hidden=[16]",
            "--model.init_args.decoder_bias=unigram",
            "--data.init_args.val_size=20",
            "--data.init_args.batch_size=16",
            *QUIET,
        ]
    )
    metrics = cli.trainer.callback_metrics
    assert isinstance(cli.model, NVDM)
    assert math.isfinite(float(metrics["test/perplexity"]))


def test_a_decaying_temperature_schedule_on_nvdm_is_refused_before_training(tmp_path):
    corpus = write_corpus(tmp_path / "corpus")
    args = ["fit", "--config", str(CONFIGS / "nvdm" / "20news.yaml"), f"--data.data_dir={corpus}"]
    args += ["--model.init_args.vocab_size=30", "--data.init_args.val_size=20", "--temperature.kind=exponential"]
    args += ["--trainer.logger=false", *QUIET]
    with pytest.raises(ValueError, match="has no estimator with a temperature to anneal"):
        main(args)


def test_a_non_finite_loss_stops_training_with_the_first_bad_step(tmp_path):
    """Read at the logging steps, the check still names the step where the loss first went bad."""

    class BrokenAtStepTwo(NVDM):
        def losses(self, batch, num_samples):
            values = super().losses(batch, num_samples)
            if self.training and self.global_step == 2:
                values["loss"] = values["loss"] * float("inf")
            return values

    torch.manual_seed(0)
    model = BrokenAtStepTwo(vocab_size=30, topics=4, hidden=(16,), optimizer=lambda p: torch.optim.SGD(p, lr=0.0))
    data = BagOfWords(str(write_corpus(tmp_path / "corpus")), val_size=20, batch_size=16, eval_batch_size=30)
    trainer = pl.Trainer(max_steps=5, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    with pytest.raises(FloatingPointError, match=r"loss is inf at global step 2, epoch 0, batch 2; lower the"):
        trainer.fit(model, datamodule=data)
