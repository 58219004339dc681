"""PredictionWriter: every example's latents with its dataset index, one pickle-free file per rank."""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from gengs_lightning.callbacks import PredictionWriter, read_predictions


class Echo(pl.LightningModule):
    """``predict_step`` returns ``S`` copies of the batch as latent samples ``(S, B, D)`` (plus ``offset``)."""

    def __init__(self, num_samples: int = 2, offset: float = 0.0):
        super().__init__()
        self.num_samples, self.offset = num_samples, offset

    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        return (batch + self.offset).expand(self.num_samples, *batch.shape)


def predict(tmp_path, model, loaders, **kwargs):
    trainer = pl.Trainer(
        accelerator="cpu",
        logger=False,
        callbacks=[PredictionWriter(str(tmp_path), **kwargs)],
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.predict(model, loaders, return_predictions=False)


def data(num_examples: int = 23) -> torch.Tensor:
    """Example ``i`` is ``[i, 2 i, 3 i]``: its values tell its index."""
    return torch.arange(num_examples, dtype=torch.float32)[:, None] * torch.tensor([1.0, 2.0, 3.0])


def test_each_example_is_stored_with_its_own_index(tmp_path):
    examples = data()
    predict(tmp_path, Echo(), DataLoader(examples, batch_size=5, shuffle=True))
    with np.load(tmp_path / "predictions_rank0.npz", allow_pickle=False) as archive:
        indices, latents = archive["indices"], archive["latents"]
    assert indices.dtype == latents.dtype == np.int64
    assert latents.shape == (23, 2, 3)  # (N, S, D): batch first
    assert sorted(indices.tolist()) == list(range(23))
    assert indices.tolist() != list(range(23))  # shuffled: the pairing is by index, not by position
    assert np.array_equal(latents, examples[indices].long()[:, None].expand(-1, 2, -1).numpy())
    read_indices, read_latents = read_predictions(tmp_path)
    assert read_indices.tolist() == list(range(23))
    assert np.array_equal(read_latents[:, 0], examples.long().numpy())


def test_several_loaders_get_a_file_each_and_stale_files_are_removed(tmp_path):
    np.savez(tmp_path / "predictions_rank1.npz", indices=np.arange(3), latents=np.zeros((3, 1, 3)))  # a past run
    predict(tmp_path, Echo(num_samples=1), [DataLoader(data(4), batch_size=3), DataLoader(data(6), batch_size=3)])
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "predictions_dataloader0_rank0.npz",
        "predictions_dataloader1_rank0.npz",
    ]
    indices, latents = read_predictions(tmp_path, prefix="predictions_dataloader1")
    assert indices.tolist() == list(range(6)) and latents.shape == (6, 1, 3)


def test_relaxed_values_are_refused(tmp_path):
    with pytest.raises(ValueError, match="not whole numbers"):
        predict(tmp_path, Echo(offset=0.5), DataLoader(data(4), batch_size=2))


def test_reading_a_folder_without_predictions_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"{tmp_path} holds no predictions_rank<r>.npz"):
        read_predictions(tmp_path)


def test_a_loader_without_batching_gets_positions_with_a_warning(tmp_path):
    """The toy task's loader yields whole batches (``batch_size=None``): no dataset indices to report."""
    with pytest.warns(Warning, match="reports no dataset indices"):
        predict(tmp_path, Echo(num_samples=1), DataLoader([data(4), data(3)], batch_size=None))
    indices, latents = read_predictions(tmp_path)
    assert indices.tolist() == list(range(7))
    assert np.array_equal(latents[:, 0], torch.cat([data(4), data(3)]).long().numpy())
