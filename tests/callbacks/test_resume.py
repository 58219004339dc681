"""ExactResume: random states in checkpoints, restored per rank, and a warning where a resume cannot be exact."""

from __future__ import annotations

import random
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.trainer.states import TrainerFn
from torch.utils.data import DataLoader

from gengs_lightning.callbacks.resume import ExactResume, random_state, set_random_state
from gengs_lightning.data import ToyTargets
from gengs_lightning.distributions import Prior
from gengs_lightning.estimators import GenGSExplicit
from gengs_lightning.models import NVDM, NVPDEF, ToyTask


def draws() -> tuple:
    return torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)]


def test_a_random_state_restores_torch_numpy_and_python_draws(tmp_path):
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    state = random_state()
    expected = draws()
    torch.save(state, tmp_path / "state.pt")
    draws()
    set_random_state(torch.load(tmp_path / "state.pt", weights_only=True))  # loadable like a checkpoint
    assert draws() == expected


class PlainToyTargets(ToyTargets):
    """Toy targets from a plain DataLoader, which Lightning cannot resume mid-epoch."""

    def train_dataloader(self) -> DataLoader:
        return DataLoader([self.targets] * self.steps_per_epoch, batch_size=None)


def fit(tmp_path, data: ToyTargets, max_steps: int, ckpt_path=None) -> pl.Trainer:
    task = ToyTask(GenGSExplicit(window=60), Prior("poisson", {"rate": 20.0}), init={"rate": 5.0}, grad_every=0)
    checkpoints = pl.callbacks.ModelCheckpoint(tmp_path / "checkpoints", every_n_train_steps=15, save_top_k=-1)
    trainer = pl.Trainer(
        max_steps=max_steps,
        logger=False,
        callbacks=[checkpoints],
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    trainer.fit(task, datamodule=data, ckpt_path=ckpt_path, weights_only=False)  # hparams hold the estimator
    return trainer


def test_every_fit_of_a_discrete_latent_module_checkpoints_its_random_state(tmp_path):
    trainer = fit(tmp_path, ToyTargets(steps_per_epoch=40), max_steps=15)
    assert sum(isinstance(c, ExactResume) for c in trainer.callbacks) == 1
    (path,) = (tmp_path / "checkpoints").glob("*step=15.ckpt")
    state = torch.load(path, weights_only=False)["callbacks"]["ExactResume"]
    assert len(state["random_states"]) == 1 and state["log_step"] == 15


def test_every_model_family_adds_the_callback_once():
    """The discrete-latent models and NVDM, their sibling, share the hook (NVPDEF gets it through both bases)."""
    prior = Prior("poisson", {"rate": 1.0})
    models = [
        ToyTask(GenGSExplicit(window=10), prior, init={"rate": 5.0}),
        NVPDEF(GenGSExplicit(window=10), prior, vocab_size=30, topics=[4], hidden=[16], top_words=3),
        NVDM(vocab_size=30, topics=4, hidden=[16], top_words=3),
    ]
    for model in models:
        assert [type(callback) for callback in model.configure_callbacks()] == [ExactResume], type(model).__name__


def test_a_mid_epoch_resume_with_a_plain_loader_warns_once_that_it_is_not_exact(tmp_path):
    fit(tmp_path, PlainToyTargets(steps_per_epoch=40), max_steps=15)
    (path,) = (tmp_path / "checkpoints").glob("*step=15.ckpt")
    with pytest.warns(UserWarning) as caught:
        fit(tmp_path, PlainToyTargets(steps_per_epoch=40), max_steps=20, ckpt_path=path)
    ours = [w for w in caught if "not an exact continuation" in str(w.message)]
    assert len(ours) == 1
    assert "Resuming mid-epoch (batch 15 of epoch 0, global step 15)" in str(ours[0].message)


def test_a_mid_epoch_resume_with_a_resumable_loader_does_not_warn(tmp_path):
    fit(tmp_path, ToyTargets(steps_per_epoch=40), max_steps=15)
    (path,) = (tmp_path / "checkpoints").glob("*step=15.ckpt")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(tmp_path, ToyTargets(steps_per_epoch=40), max_steps=20, ckpt_path=path)
    assert not [w for w in caught if "exact continuation" in str(w.message) or "random state" in str(w.message)]


def test_a_checkpoint_without_random_states_warns(tmp_path):
    fit(tmp_path, ToyTargets(steps_per_epoch=40), max_steps=15)
    (path,) = (tmp_path / "checkpoints").glob("*step=15.ckpt")
    checkpoint = torch.load(path, weights_only=False)
    del checkpoint["callbacks"]["ExactResume"]
    torch.save(checkpoint, tmp_path / "old.ckpt")
    with pytest.warns(UserWarning, match=r"old\.ckpt holds no random state"):
        fit(tmp_path, ToyTargets(steps_per_epoch=40), max_steps=20, ckpt_path=tmp_path / "old.ckpt")


def test_a_rank_without_a_saved_state_warns_and_keeps_its_seed():
    """Resuming with more ranks than the checkpoint was written with: the extra ranks keep their seeded states."""
    callback = ExactResume()
    callback._trainer = SimpleNamespace(state=SimpleNamespace(fn=TrainerFn.FITTING), global_rank=1)
    torch.manual_seed(5)
    expected = torch.rand(2)
    torch.manual_seed(5)
    with pytest.warns(UserWarning, match=r"holds the random states of 1 rank\(s\); rank 1 and above keep"):
        callback.load_state_dict({"random_states": [random_state()], "log_step": 0})
    assert torch.equal(torch.rand(2), expected)
