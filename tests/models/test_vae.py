"""The VAE with count latents (NeurIPS Section 6.2): every estimator and prior, the IW bound, logging."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
from helpers import event_dirs, read_scalars
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from gengs_lightning.callbacks import HParamsTable
from gengs_lightning.data import Digits
from gengs_lightning.distributions import Prior
from gengs_lightning.estimators import GenGSExplicit, GenGSImplicit, GenGSNonparametric, GenGSStraightThrough
from gengs_lightning.models import VAE

PRIORS = {
    "poisson2": ("poisson", {"rate": 2.0}),
    "poisson3": ("poisson", {"rate": 3.0}),
    "geometric025": ("geometric", {"probs": 0.25}),
    "geometric05": ("geometric", {"probs": 0.5}),
    "negbin3_05": ("negative_binomial", {"total_count": 3.0, "probs": 0.5}),
    "negbin5_03": ("negative_binomial", {"total_count": 5.0, "probs": 0.3}),
}
ESTIMATORS = {
    "explicit": lambda: GenGSExplicit(window=24, tau=0.5),
    "implicit": lambda: GenGSImplicit(window=24, tau=0.5),
    "straight_through": lambda: GenGSStraightThrough(window=24, tau=0.5),
    "nonparametric": lambda: GenGSNonparametric(eps=1e-4, max_size=64, tau=0.5),
}


def digits_vae(estimator, prior: Prior, **kwargs) -> VAE:
    options = {"data_dim": 64, "latent_dim": 6, "encoder_hidden": (32,), "image_shape": (8, 8), "iw_samples": 10}
    return VAE(estimator, prior, **{**options, **kwargs})


def quiet_trainer(**kwargs) -> pl.Trainer:
    options = {"logger": False, "enable_checkpointing": False, "enable_progress_bar": False}
    return pl.Trainer(enable_model_summary=False, **{**options, **kwargs})


@pytest.mark.parametrize("prior_name", PRIORS)
@pytest.mark.parametrize("estimator_name", ESTIMATORS)
def test_every_gengs_estimator_trains_on_every_prior(estimator_name, prior_name):
    torch.manual_seed(0)
    model = digits_vae(ESTIMATORS[estimator_name](), Prior(*PRIORS[prior_name]))
    trainer = quiet_trainer(max_steps=4, limit_val_batches=1, limit_test_batches=1, num_sanity_val_steps=0)
    data = Digits(batch_size=32)
    trainer.fit(model, datamodule=data)
    (result,) = trainer.test(model, datamodule=data, verbose=False)
    assert set(result) == {"test/loss", "test/recon", "test/kl", "test/nll_iw"}
    assert all(math.isfinite(v) for v in result.values())
    assert result["test/kl"] >= 0
    assert result["test/loss"] == pytest.approx(result["test/recon"] + result["test/kl"], rel=1e-5)


def test_posterior_starts_at_the_prior():
    prior = Prior("negative_binomial", {"total_count": 3.0, "probs": 0.5})
    for estimator in (GenGSExplicit(window=20), GenGSImplicit(window=20)):
        model = digits_vae(estimator, prior)
        torch.nn.init.zeros_(model.encoder[-1].weight)  # isolate the bias: q(z|x) = p(z) for every x
        out = model.estimate(torch.bernoulli(torch.full((5, 64), 0.3)))
        assert torch.allclose(out.kl, torch.zeros(5), atol=1e-5)


def exact_nll(model: VAE, x: torch.Tensor) -> torch.Tensor:
    """``-log p(x)`` by enumerating every latent configuration of a tiny model (the truncated prior)."""
    posterior = model.estimator.posterior(model.encode(x), model.prior)
    prior = model.estimator.prior_distribution(posterior, model.prior)
    values = posterior.outcomes
    grid = torch.cartesian_prod(*[values] * model.latent_dim)  # (n^D, D)
    log_prior = prior.log_prob(grid).sum(-1)  # (n^D,)
    log_likelihood = -model.objective(x, grid[:, None, :].expand(-1, x.shape[0], -1))  # (n^D, B)
    return -(log_likelihood + log_prior[:, None]).logsumexp(0)


def test_importance_weighted_nll_is_an_upper_bound_that_converges_to_the_exact_value():
    torch.manual_seed(0)
    model = digits_vae(GenGSImplicit(window=5), Prior("poisson", {"rate": 1.0}), latent_dim=3, encoder_hidden=(16,))
    for p in model.parameters():  # a sharper model than the initialisation, so the bound is not trivial
        p.data.mul_(3.0)
    x = torch.bernoulli(torch.full((4, 64), 0.3))
    exact = exact_nll(model, x)
    repeats = model.importance_weighted_nll(x.repeat(4000, 1), 1).view(4000, 4)  # K = 1: estimates the -ELBO
    many = model.importance_weighted_nll(x.repeat(20, 1), 2000, chunk_size=500).view(20, 4)
    elbo_gap = repeats.mean(0) - exact
    error = repeats.std(0) / math.sqrt(repeats.shape[0])
    assert torch.all(elbo_gap > 4 * error)  # with K = 1 the bound is loose (the KL to the posterior)
    assert torch.all((many.mean(0) - exact).abs() < torch.maximum(4 * many.std(0) / math.sqrt(20), 1e-3 * exact))
    # K = 1 estimates -ELBO = E_q[-log p(x|z)] + KL(q || p), computed in closed form by the estimator
    model.eval()
    with torch.no_grad():
        negative_elbo = model.estimate(x.repeat(4000, 1)).loss.view(4000, 4)
    both = (negative_elbo.var(0) / 4000 + repeats.var(0) / 4000).sqrt()
    assert torch.all((negative_elbo.mean(0) - repeats.mean(0)).abs() < 4 * both)


def test_validation_logs_images_histogram_and_hparams(tmp_path):
    torch.manual_seed(0)
    model = digits_vae(GenGSExplicit(window=16, tau=0.5), Prior("poisson", {"rate": 2.0}), num_images=9)
    logger = pl.loggers.TensorBoardLogger(tmp_path, name="vae", default_hp_metric=False)
    trainer = quiet_trainer(
        max_epochs=2, logger=logger, limit_train_batches=3, limit_val_batches=2, callbacks=[HParamsTable()]
    )
    trainer.fit(model, datamodule=Digits(batch_size=32))
    (log_dir,) = event_dirs(tmp_path)
    events = EventAccumulator(str(log_dir), size_guidance={"images": 0, "histograms": 0})
    events.Reload()
    assert len(events.Images("val/inputs_and_reconstructions")) == 2  # one per validation epoch, no sanity
    samples = events.Images("val/prior_samples")[-1]
    assert (samples.height, samples.width) == (3 * 9 + 1, 3 * 9 + 1)  # 3 x 3 grid of 8x8 with 1-pixel borders
    assert events.Histograms("val/latent_values")
    assert "val/loss" in events.Tags()["scalars"]
    assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams")  # HParamsTable, as every CLI run has
    assert [step for step, _ in read_scalars(log_dir)["hp/best_val_loss"]][0] > 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"activation": "swish"}, "unknown activation 'swish'; accepted: relu, tanh"),
        ({"image_shape": (9, 9)}, "image_shape (9, 9) has 81 pixels but data_dim is 64"),
        ({"latent_dim": 0}, "latent_dim must be an integer >= 1, got 0"),
        ({"encoder_hidden": (32, -1)}, "encoder_hidden[1] must be an integer >= 1, got -1"),
        ({"iw_samples": 0}, "iw_samples must be an integer >= 1, got 0"),
    ],
)
def test_bad_arguments_are_rejected(kwargs, message):
    with pytest.raises(ValueError) as error:
        digits_vae(GenGSExplicit(window=16), Prior("poisson", {"rate": 2.0}), **kwargs)
    assert message in str(error.value)


def test_wrong_data_size_is_reported_with_the_fix():
    model = digits_vae(GenGSExplicit(window=16), Prior("poisson", {"rate": 2.0}))
    with pytest.raises(ValueError, match=r"expects flattened images of shape \(batch, 64\), got \(3, 784\)"):
        model.estimate(torch.zeros(3, 784))
