"""``torch.compile`` of a model's encoder and objective (and optionally its estimator) for training."""

from __future__ import annotations

from typing import Literal

import pytorch_lightning as pl
import torch


class CompileModel(pl.Callback):
    """Compile :meth:`~gengs_lightning.models.DiscreteLatentModule.encode` and ``objective`` before the run.

    The model's two methods are replaced on the instance by their ``torch.compile`` d versions at
    ``setup`` (so checkpoints and hyperparameters are those of the plain model), and restored at
    ``teardown``. The estimator is left eager by default: its Python control flow (window choice,
    table routes) and the CPU kernel of the folded table split a graph into pieces, which costs more
    than it saves (``scripts/bench_estimators.py --compile`` measures it); ``estimator=True`` compiles
    its ``forward`` too. ``python -m gengs_lightning fit --compile true`` adds this callback with its
    defaults; ``scripts/bench_training.py --compile`` times it against the eager model. Note that
    ``torch.compile`` turns off ``torch.distributions``' default argument validation for the whole
    process on first use (PyTorch's choice, in ``torch/_dynamo/eval_frame.py``).

    Args:
        estimator: Also compile the estimator's ``forward``.
        backend: ``torch.compile`` backend (``inductor`` generates kernels; ``eager`` only traces).
        mode: ``torch.compile`` mode (``default``, ``reduce-overhead``, ``max-autotune``).
        dynamic: Compile for dynamic shapes (``None``: after the first shape change, as torch does).

    Raises:
        ValueError: At ``setup``, if the model has no ``encode`` and ``objective`` (e.g. the NVDM reference).
    """

    def __init__(
        self,
        estimator: bool = False,
        backend: str = "inductor",
        mode: Literal["default", "reduce-overhead", "max-autotune"] = "default",
        dynamic: bool | None = None,
    ):
        self.estimator, self.backend, self.mode, self.dynamic = estimator, backend, mode, dynamic
        self._originals: list[tuple[object, str]] = []

    def _compile(self, owner: object, name: str) -> None:
        function = getattr(owner, name)
        setattr(owner, name, torch.compile(function, backend=self.backend, mode=self.mode, dynamic=self.dynamic))
        self._originals.append((owner, name))

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if not all(callable(getattr(pl_module, name, None)) for name in ("encode", "objective")):
            raise ValueError(
                f"--compile needs a model with encode and objective (a gengs_lightning DiscreteLatentModule); "
                f"got {type(pl_module).__name__}"
            )
        if self._originals:
            return
        self._compile(pl_module, "encode")
        self._compile(pl_module, "objective")
        if self.estimator:
            self._compile(pl_module.estimator, "forward")

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        for owner, name in self._originals:
            delattr(owner, name)  # the class's method shows through again
        self._originals = []
