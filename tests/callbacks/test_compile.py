"""CompileModel and ``--compile``: the model's encode and objective compiled for the run, the plain model after."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from gengs_lightning.callbacks import CompileModel
from gengs_lightning.cli import main
from gengs_lightning.data import ToyTargets
from gengs_lightning.distributions import Prior
from gengs_lightning.estimators import GenGSExplicit
from gengs_lightning.models import NVDM, ToyTask


def toy_fit(callbacks: list, steps: int = 30) -> tuple[ToyTask, float]:
    """A short toy fit from seed 0; the model and its final rate."""
    pl.seed_everything(0, verbose=False)
    model = ToyTask(GenGSExplicit(window=20, tau=0.5), Prior("poisson", {"rate": 5.0}))
    trainer = pl.Trainer(
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
    )
    trainer.fit(model, datamodule=ToyTargets(num_targets=10))
    return model, torch.nn.functional.softplus(model.raw).item()


def test_a_compiled_fit_trains_the_same_model_and_leaves_it_plain():
    """Dynamo's ``eager`` backend traces and runs the same operations: the same rate as without compiling."""
    calls = []
    backend = lambda graph, inputs: calls.append(graph) or graph.forward  # noqa: E731  (an eager backend that counts)
    compiled, rate = toy_fit([CompileModel(backend=backend)])
    plain, plain_rate = toy_fit([])
    assert calls, "nothing was compiled"
    assert rate == pytest.approx(plain_rate, rel=1e-6)
    assert "encode" not in vars(compiled) and "objective" not in vars(compiled)  # restored at teardown


def test_the_cli_flag_adds_the_callback(toy_args):
    cli = main(["--config", *toy_args("poisson")[1:], "--compile", "true"], run=False)
    assert any(isinstance(callback, CompileModel) for callback in cli.trainer.callbacks)
    cli = main(toy_args("poisson"), run=False)
    assert not any(isinstance(callback, CompileModel) for callback in cli.trainer.callbacks)


def test_a_model_without_encode_and_objective_is_refused():
    model = NVDM(vocab_size=10, topics=2, hidden=[4])
    with pytest.raises(ValueError, match="--compile needs a model with encode and objective"):
        CompileModel().setup(pl.Trainer(logger=False), model, "fit")
