"""Test negative ELBO of a trained GenGS model with exact discrete latents and with relaxed ones.

The model's ``test/loss`` feeds the decoder exact draws of the discrete posterior: the negative ELBO of
the discrete model, a bound on its ``-log p(x)``. A Gumbel-Softmax training loop instead feeds relaxed
samples ``z = T(GS(pi, tau))`` (NeurIPS Eq. 5) with the same closed-form KL; evaluated that way, the
number is not a bound on the discrete model, but it is what a test loop that keeps the training-time
sampling reports, so papers' tables may hold it. This prints both, mean +- standard error over the
test set, for a checkpoint written by the command line (model and data are restored from it):

    python scripts/relaxed_elbo.py logs/vae_mnist_poisson2/version_0/checkpoints/<best>.ckpt
    python scripts/relaxed_elbo.py <ckpt> --data-dir ../shared/data/mnist --tau 0.1
"""

from __future__ import annotations

import argparse
import importlib
import math

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from gengs_lightning.estimators import GenGSEstimator
from gengs_lightning.models import DiscreteLatentModule


@torch.no_grad()
def negative_elbo(model: DiscreteLatentModule, loader: DataLoader, relaxed: bool) -> tuple[float, float]:
    """Mean and standard error over ``loader`` of the per-example loss, with relaxed or exact latents.

    Only the estimator's mode changes: in training mode a GenGS estimator draws relaxed samples at its
    temperature, in eval mode exact ones. The model's own layers stay in eval mode.
    """
    model.eval()
    model.estimator.train(relaxed)
    losses = torch.cat([model.estimate(batch).loss for batch in loader])
    model.estimator.eval()
    return losses.mean().item(), losses.std().item() / math.sqrt(losses.numel())


def checkpoint_class(checkpoint: dict, key: str, base: type) -> type:
    """The class the command line recorded under ``checkpoint[key]["_class_path"]``, a subclass of ``base``."""
    class_path = checkpoint.get(key, {}).get("_class_path")
    if class_path is None:
        raise SystemExit(f"the checkpoint has no {key}['_class_path']: was it written by `python -m gengs_lightning`?")
    module_name, _, class_name = class_path.rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name)
    if not issubclass(cls, base):
        raise SystemExit(f"the checkpoint's {class_path} is not a {base.__name__}")
    return cls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a checkpoint written by `python -m gengs_lightning fit`")
    parser.add_argument("--data-dir", default=None, help="where the data is now, if not where it was in training")
    parser.add_argument("--tau", type=float, default=None, help="temperature (default: the checkpoint's)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    checkpoint = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
    model_class = checkpoint_class(checkpoint, "hyper_parameters", DiscreteLatentModule)
    model = model_class.load_from_checkpoint(args.checkpoint, map_location="cpu", weights_only=True)
    if not isinstance(model.estimator, GenGSEstimator):
        parser.error(f"the checkpoint's estimator is {type(model.estimator).__name__}; this compares GenGS estimators")
    overrides = {} if args.data_dir is None else {"data_dir": args.data_dir}
    data_class = checkpoint_class(checkpoint, "datamodule_hyper_parameters", pl.LightningDataModule)
    data = data_class.load_from_checkpoint(args.checkpoint, weights_only=True, **overrides)
    data.setup("test")
    if args.tau is not None:
        model.estimator.set_temperature(args.tau)
    tau = model.estimator.tau.item()
    for label, relaxed in [("exact discrete latents", False), (f"relaxed latents, tau {tau:.3g}", True)]:
        torch.manual_seed(args.seed)
        mean, stderr = negative_elbo(model, data.test_dataloader(), relaxed)
        print(f"test negative ELBO, {label:<28}: {mean:8.2f} +- {stderr:.2f}")


if __name__ == "__main__":
    main()
