"""GradientMonitor: the encoder gradient's variance over estimator draws, for any model."""

from __future__ import annotations

import re

import pytest
import pytorch_lightning as pl
import torch
from helpers import event_dirs, read_scalars

from gengs_lightning.callbacks import GradientMonitor
from gengs_lightning.data import Digits, ToyTargets
from gengs_lightning.distributions import Prior
from gengs_lightning.estimators import GenGSExplicit
from gengs_lightning.models import NVDM, VAE, DiscreteLatentModule, ToyTask


def test_variance_matches_independent_draws_on_the_toy_task():
    torch.manual_seed(0)
    task = ToyTask(GenGSExplicit(window=60, tau=0.5), Prior("poisson", {"rate": 20.0}), init={"rate": 12.0})
    targets = ToyTargets.draw(task.target.untruncated(), 100, seed=0)
    draws = 400
    monitored = GradientMonitor(num_draws=draws).gradient_variance(task, targets)  # the toy's one-pass draws
    reference = torch.stack(list(DiscreteLatentModule.gradient_draws(task, targets, draws))).var(0).sum().item()
    # Two independent variance estimates of one quantity: their ratio is ~F(M-1, M-1), sd ~ sqrt(4 / M).
    assert monitored / reference == pytest.approx(1.0, abs=4 * (4 / draws) ** 0.5)


class CountingEstimator(GenGSExplicit):
    """A stateful estimator: counts its calls in a buffer (like a moving-average baseline would move)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, *args, **kwargs):
        self.calls += 1
        return super().forward(*args, **kwargs)


def test_monitoring_restores_the_estimator_state_and_uses_only_the_encoder():
    model = VAE(
        CountingEstimator(window=16),
        Prior("poisson", {"rate": 2.0}),
        data_dim=64,
        latent_dim=4,
        encoder_hidden=(16,),
        image_shape=(8, 8),
    )
    batch = torch.bernoulli(torch.full((8, 64), 0.4))
    variance = GradientMonitor(num_draws=5).gradient_variance(model, batch)
    assert variance > 0
    assert model.estimator.calls.item() == 0
    encoder_only = sum(p.numel() for p in model.encoder_parameters())
    assert encoder_only < sum(p.numel() for p in model.parameters())


def test_the_toy_tasks_one_pass_draws_restore_the_estimator_state_too():
    task = ToyTask(CountingEstimator(window=60), Prior("poisson", {"rate": 20.0}), init={"rate": 12.0})
    targets = ToyTargets.draw(task.target.untruncated(), 10, seed=0)
    assert GradientMonitor(num_draws=5).gradient_variance(task, targets) > 0
    assert task.estimator.calls.item() == 0


def test_logs_train_grad_var_every_n_steps(tmp_path):
    torch.manual_seed(0)
    model = VAE(
        GenGSExplicit(window=16, tau=0.5),
        Prior("poisson", {"rate": 2.0}),
        data_dim=64,
        latent_dim=4,
        encoder_hidden=(16,),
        image_shape=(8, 8),
    )
    logger = pl.loggers.TensorBoardLogger(tmp_path, name="monitor", default_hp_metric=False)
    trainer = pl.Trainer(
        max_steps=5,
        logger=logger,
        callbacks=[GradientMonitor(every_n_steps=2, num_draws=4)],
        enable_checkpointing=False,
        enable_progress_bar=False,
        limit_val_batches=0,
    )
    trainer.fit(model, datamodule=Digits(batch_size=16))
    (log_dir,) = event_dirs(tmp_path)
    logged = read_scalars(log_dir)["train/grad_var"]
    assert [step for step, _ in logged] == [0, 2, 4]
    assert all(value > 0 for _, value in logged)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"every_n_steps": 0}, "every_n_steps must be an integer >= 1, got 0"),
        ({"every_n_steps": True}, "every_n_steps must be an integer >= 1, got True"),
        ({"every_n_steps": 2.0}, "every_n_steps must be an integer >= 1, got 2.0"),
        ({"num_draws": 1}, "num_draws must be an integer >= 2, got 1"),
        ({"num_draws": True}, "num_draws must be an integer >= 2, got True"),
    ],
)
def test_bad_arguments_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        GradientMonitor(**kwargs)


def test_a_model_without_gradient_draws_is_refused_before_training():
    trainer = pl.Trainer(logger=False, callbacks=[GradientMonitor()], enable_checkpointing=False)
    model = NVDM(vocab_size=30, topics=4, hidden=(16,), top_words=3)
    with pytest.raises(ValueError, match="GradientMonitor needs a model with gradient_draws.*; NVDM has none"):
        GradientMonitor().setup(trainer, model, "fit")
