"""Binary image DataModules on small files written here, on scikit-learn's digits and on the real datasets."""

from __future__ import annotations

import gzip
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import scipy.io
import torch
import torch.nn.functional as F
from helpers import SHARED_DATA

from gengs_lightning.data import MNIST, BinarizedMNIST, Digits, Omniglot
from gengs_lightning.data.images import downsample

N_TRAIN, N_TEST = 30, 12


def write_idx(path: Path, images: np.ndarray) -> None:
    """IDX images (magic 2051), gzipped when the name ends in .gz."""
    data = b"".join(n.to_bytes(4, "big") for n in (2051, *images.shape)) + images.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def write_mnist(directory: Path, train: np.ndarray, test: np.ndarray) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    write_idx(directory / "train-images-idx3-ubyte", train)
    write_idx(directory / "t10k-images-idx3-ubyte.gz", test)
    return directory


@pytest.fixture
def mnist(tmp_path) -> tuple[Path, np.ndarray, np.ndarray]:
    """A tiny MNIST: random images whose first pixel is their index, so that a row tells its image."""
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, size=(N_TRAIN, 28, 28), dtype=np.uint8)
    test = rng.integers(0, 256, size=(N_TEST, 28, 28), dtype=np.uint8)
    train[:, 0, 0] = np.arange(N_TRAIN)
    return write_mnist(tmp_path / "mnist", train, test), train, test


def ids(rows: torch.Tensor) -> list[int]:
    return (rows[:, 0] * 255).round().long().tolist()


def is_binary(x: torch.Tensor) -> bool:
    return x.dtype == torch.float32 and bool(((x == 0) | (x == 1)).all())


# -- MNIST ---------------------------------------------------------------------------------------------
def test_mnist_splits_shapes_and_values(mnist):
    directory, train, test = mnist
    data = MNIST(directory, val_size=10, batch_size=8, eval_batch_size=5)
    assert (data.image_shape, data.data_dim) == ((28, 28), 784)
    grey_train, grey_val, grey_test = data.read_splits()
    assert sorted(ids(grey_train) + ids(grey_val)) == list(range(N_TRAIN)) and len(ids(grey_val)) == 10
    assert ids(grey_train) == sorted(ids(grey_train)) and ids(grey_val) == sorted(ids(grey_val))  # file order
    for grey, images in ((grey_train, train[ids(grey_train)]), (grey_val, train[ids(grey_val)]), (grey_test, test)):
        assert grey.dtype == torch.float32
        assert torch.equal(grey, torch.from_numpy(images).reshape(-1, 784).float() / 255)

    data.setup("fit")
    assert torch.equal(data.train_data, grey_train)  # dynamic: grey levels, drawn per batch
    assert data.val_data.shape == (10, 784) and is_binary(data.val_data)
    assert data.test_data.shape == (N_TEST, 784) and is_binary(data.test_data)
    batch = next(iter(data.train_dataloader()))
    assert batch.shape == (8, 784) and batch.dtype == torch.float32
    assert [b.shape for b in data.val_dataloader()] == [(5, 784), (5, 784)]
    assert torch.equal(torch.cat(list(data.predict_dataloader())), data.test_data)


def test_mnist_prefers_the_plain_file_over_the_gzipped_one(mnist):
    directory, train, _ = mnist
    write_idx(directory / "train-images-idx3-ubyte.gz", 255 - train)
    assert MNIST(directory).files()["train"].name == "train-images-idx3-ubyte"
    (directory / "train-images-idx3-ubyte").unlink()
    grey, val, _ = MNIST(directory, val_size=1).read_splits()
    assert sorted(ids(torch.cat([grey, val]))) == list(range(256 - N_TRAIN, 256))  # the first pixels of 255 - train


def test_mnist_threshold_binarization(mnist):
    directory, _, _ = mnist
    data = MNIST(directory, binarization="threshold", threshold=0.3, val_size=10)
    grey = data.read_splits()
    data.setup("fit")
    for binary, levels in zip((data.train_data, data.val_data, data.test_data), grey, strict=True):
        assert torch.equal(binary, (levels > 0.3).float())


def test_mnist_rejects_images_of_another_size(tmp_path):
    directory = write_mnist(tmp_path, np.zeros((4, 10, 10), np.uint8), np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(
        ValueError, match="train-images-idx3-ubyte: IDX array of shape \\(4, 10, 10\\), expected images"
    ):
        MNIST(directory, val_size=1).setup("fit")


def test_grey_levels_are_refused_as_binary_data(mnist):
    with pytest.raises(ValueError, match="binarization=None uses the images as they are, but MNIST has grey levels"):
        MNIST(mnist[0], binarization=None, val_size=1).setup("fit")


def test_validation_split_and_evaluation_draws_depend_on_the_seed_only(mnist):
    directory, _, _ = mnist

    def splits(seed: int, global_seed: int) -> tuple[list[int], torch.Tensor, torch.Tensor]:
        torch.manual_seed(global_seed)  # must not matter
        data = MNIST(directory, val_size=10, seed=seed)
        val_ids = ids(data.read_splits()[1])
        data.setup("fit")
        return val_ids, data.val_data, data.test_data

    first, again, other = splits(0, global_seed=1), splits(0, global_seed=2), splits(1, global_seed=1)
    assert first[0] == again[0] and torch.equal(first[1], again[1]) and torch.equal(first[2], again[2])
    assert first[0] != other[0] and not torch.equal(first[2], other[2])


def test_setup_reads_once_for_every_stage(mnist):
    directory, _, _ = mnist
    data = MNIST(directory, val_size=10)
    data.setup("fit")
    val, test = data.val_data, data.test_data
    for file in directory.iterdir():
        file.unlink()
    data.setup("test")
    assert data.val_data is val and data.test_data is test


def test_hyperparameters_are_the_constructor_arguments(mnist):
    assert dict(MNIST(mnist[0], val_size=7, seed=3).hparams) == {
        "data_dir": mnist[0],
        "binarization": "dynamic",
        "threshold": 0.5,
        "val_size": 7,
        "batch_size": 100,
        "eval_batch_size": 1000,
        "num_workers": 0,
        "seed": 3,
    }
    assert set(BinarizedMNIST("somewhere").hparams) == {"data_dir", "batch_size", "eval_batch_size", "num_workers"}


# -- dynamic binarisation in a real training loop -----------------------------------------------------
LEVELS = np.array([0, 51, 128, 230, 255], np.uint8)  # grey 0, 0.2, 0.502, 0.902, 1


class RecordBatches(pl.LightningModule):
    """Keep every training and validation batch as the model sees it, and whether the hook leaves the latter alone."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.train_batches: list[torch.Tensor] = []
        self.val_batches: list[torch.Tensor] = []
        self.val_batches_untouched: list[bool] = []

    def training_step(self, batch, batch_idx):
        self.train_batches.append(batch.clone())
        return (self.weight - batch.mean()) ** 2

    def validation_step(self, batch, batch_idx):
        self.val_batches.append(batch.clone())
        self.val_batches_untouched.append(self.trainer.datamodule.on_after_batch_transfer(batch, 0) is batch)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.fixture(scope="module")
def dynamic_run(tmp_path_factory) -> tuple[MNIST, RecordBatches]:
    """Fit 3 epochs of 2 batches on 50 copies of one image whose pixels cycle through LEVELS."""
    image = np.resize(LEVELS, 784).reshape(28, 28)
    directory = write_mnist(tmp_path_factory.mktemp("mnist"), np.stack([image] * 60), np.stack([image] * 4))
    data = MNIST(directory, val_size=10, batch_size=25, eval_batch_size=10)
    model = RecordBatches()
    pl.seed_everything(0)
    trainer = pl.Trainer(
        max_epochs=3, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False
    )
    trainer.fit(model, datamodule=data)
    return data, model


def test_dynamic_training_batches_are_fresh_binary_draws(dynamic_run):
    data, model = dynamic_run
    batches = model.train_batches
    assert len(batches) == 6 and all(b.shape == (25, 784) and is_binary(b) for b in batches)
    for first, second in zip(batches, batches[1:], strict=False):  # the same images, drawn again
        assert not torch.equal(first, second)
    assert not torch.equal(batches[0][0], batches[0][1])


def test_evaluation_batches_are_drawn_once(dynamic_run):
    data, model = dynamic_run
    assert len(model.val_batches) == 4  # sanity check and 3 epochs
    assert all(torch.equal(batch, data.val_data) for batch in model.val_batches)
    assert all(model.val_batches_untouched)  # the hook draws only while training
    assert is_binary(data.val_data) and not torch.equal(data.val_data[0], data.val_data[1])


def test_dynamic_draws_have_the_grey_level_as_mean(dynamic_run):
    _, model = dynamic_run
    draws = torch.cat(model.train_batches).double()  # (150, 784), every row a draw of the same image
    levels = torch.from_numpy(np.resize(LEVELS, 784)).double() / 255
    for level in levels.unique():
        pixels = draws[:, levels == level]
        if level in (0, 1):
            assert torch.all(pixels == level)
        else:
            stderr = math.sqrt(level * (1 - level) / pixels.numel())
            assert abs(pixels.mean() - level) < 4 * stderr, (level.item(), pixels.mean().item(), stderr)


def test_batches_are_left_alone_outside_training(mnist):
    data = MNIST(mnist[0], val_size=10)
    data.setup("fit")
    grey = data.train_data[:4]
    assert data.on_after_batch_transfer(grey, 0) is grey  # no trainer: nothing is drawn


# -- missing files, nothing read in __init__ ----------------------------------------------------------
@pytest.mark.parametrize(
    ("make", "names"),
    [
        (MNIST, ["train-images-idx3-ubyte or train-images-idx3-ubyte.gz"]),
        (BinarizedMNIST, ["binarized_mnist_train.amat or binarized_mnist_train.mat", "binarized_larochelle"]),
        (Omniglot, ["images_background.npz"]),
    ],
)
def test_missing_files_are_reported_by_prepare_data_and_setup(tmp_path, make, names):
    directory = tmp_path / "nowhere"
    data = make(directory)  # nothing is read in __init__
    for step in (data.prepare_data, lambda: data.setup("fit")):
        with pytest.raises(FileNotFoundError) as info:
            step()
        assert all(name in str(info.value) for name in [str(directory), *names]), str(info.value)
    with pytest.raises(RuntimeError, match="call .*setup\\(\\) before asking for a dataloader"):
        data.train_dataloader()


def test_mnist_missing_test_file_names_both_spellings(mnist):
    directory, _, _ = mnist
    (directory / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="expected t10k-images-idx3-ubyte or t10k-images-idx3-ubyte.gz in"):
        MNIST(directory).prepare_data()


# -- BinarizedMNIST --------------------------------------------------------------------------------------
@pytest.fixture
def binarized(tmp_path) -> tuple[Path, dict[str, np.ndarray]]:
    """Text .amat in data_dir, .mat and a MATLAB file called .amat in data_dir/binarized_larochelle."""
    rng = np.random.default_rng(4)
    splits = {
        split: rng.integers(0, 2, size=(n, 784), dtype=np.uint8)
        for split, n in (("train", 6), ("valid", 3), ("test", 2))
    }
    (tmp_path / "binarized_larochelle").mkdir()
    (tmp_path / "binarized_mnist_train.amat").write_text("".join(" ".join(map(str, r)) + "\n" for r in splits["train"]))
    scipy.io.savemat(tmp_path / "binarized_larochelle" / "binarized_mnist_valid.mat", {"X": splits["valid"]})
    with open(tmp_path / "binarized_larochelle" / "binarized_mnist_test.amat", "wb") as file:
        scipy.io.savemat(file, {"X": splits["test"]})
    return tmp_path, splits


def test_binarized_mnist_reads_the_three_files_as_they_are(binarized):
    directory, splits = binarized
    data = BinarizedMNIST(directory, batch_size=4, eval_batch_size=2)
    assert data.binarization is None and data.data_dim == 784
    data.setup("fit")
    for split, tensor in zip(("train", "valid", "test"), (data.train_data, data.val_data, data.test_data), strict=True):
        assert torch.equal(tensor, torch.from_numpy(splits[split]).float())
    batch = next(iter(data.train_dataloader()))
    assert batch.shape == (4, 784) and is_binary(batch)


def test_binarized_mnist_rejects_grey_levels_and_other_sizes(binarized):
    directory, splits = binarized
    path = directory / "binarized_larochelle" / "binarized_mnist_valid.mat"
    scipy.io.savemat(path, {"X": splits["valid"] * 2})
    with pytest.raises(
        ValueError,
        match="binarized_mnist_valid.mat: \\(3, 784\\) with values in \\[0, 2\\], expected binary images \\(N, 784\\)",
    ):
        BinarizedMNIST(directory).setup("fit")
    scipy.io.savemat(path, {"X": splits["valid"][:, :100]})
    with pytest.raises(ValueError, match="\\(3, 100\\) with values in \\[0, 1\\], expected binary images \\(N, 784\\)"):
        BinarizedMNIST(directory).setup("fit")


# -- Omniglot --------------------------------------------------------------------------------------------
@pytest.fixture
def omniglot(tmp_path) -> tuple[Path, torch.Tensor]:
    """2 background and 1 evaluation characters of random ink; returns the ink of all 3 (ink = 1)."""
    rng = np.random.default_rng(5)
    background = rng.random((3, 20, 105, 105)) < 0.8  # True = background
    np.savez_compressed(tmp_path / "images_background.npz", images=background[:2])
    np.savez_compressed(tmp_path / "images_evaluation.npz", images=background[2:])
    return tmp_path, torch.from_numpy(~background).to(torch.uint8)


def test_omniglot_pools_both_files_and_splits_by_drawer(omniglot):
    directory, ink = omniglot
    train, val, test = Omniglot(directory, val_size=5).read_splits()
    grey = F.interpolate(ink.reshape(-1, 1, 105, 105).float(), size=(28, 28), mode="area").reshape(3, 20, 784)
    assert torch.equal(test, grey[:, 15:].reshape(-1, 784))  # drawers 16-20 of every character, in order
    drawers_1_to_15 = grey[:, :15].reshape(-1, 784)
    index = [int((drawers_1_to_15 == row).all(1).nonzero()) for row in torch.cat([train, val])]
    assert (len(train), len(val)) == (40, 5) and sorted(index) == list(range(45))


def test_omniglot_module(omniglot):
    data = Omniglot(omniglot[0], val_size=5, batch_size=16)
    assert data.image_shape == (28, 28)
    data.setup("fit")
    assert (len(data.train_data), len(data.val_data), len(data.test_data)) == (40, 5, 15)
    assert data.train_data.min() >= 0 and data.train_data.max() <= 1 and not is_binary(data.train_data)
    assert is_binary(data.val_data) and is_binary(data.test_data)
    assert next(iter(data.train_dataloader())).shape == (16, 784)


def test_downsample_averages_areas_without_transposing():
    ink = torch.zeros(2, 105, 105, dtype=torch.uint8)
    ink[0] = 1
    ink[1, :, :53] = 1  # the left 53 columns
    grey = downsample(ink, 28, chunk=1).reshape(2, 28, 28)
    assert torch.equal(grey[0], torch.ones(28, 28))
    assert torch.all(grey[1, :, :14] == 1) and torch.all(grey[1, :, 15:] == 0)
    assert torch.allclose(grey[1, :, 14], torch.tensor(0.2))  # columns 52-56: one inked of five


# -- Digits (scikit-learn) ------------------------------------------------------------------------------
def test_digits_splits_and_grey_levels():
    from sklearn.datasets import load_digits

    data = Digits(batch_size=50)
    assert (data.image_shape, data.data_dim) == ((8, 8), 64)
    train, val, test = data.read_splits()
    assert (len(train), len(val), len(test)) == (1200, 297, 300)
    images = torch.from_numpy(load_digits().data).float()
    assert torch.equal(torch.cat([train, val, test]).sum(0) * 16, images.sum(0))  # every image once
    assert torch.equal(test, Digits().read_splits()[2]) and not torch.equal(test, Digits(seed=1).read_splits()[2])
    data.setup("fit")
    assert is_binary(data.val_data) and is_binary(data.test_data)
    assert next(iter(data.train_dataloader())).shape == (50, 64)


def test_digits_sizes_must_leave_training_images():
    with pytest.raises(ValueError, match="val_size=1497 leaves no training images: it is held out of only 1497"):
        Digits(val_size=1497).setup("fit")


def test_digits_without_scikit_learn(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match="pip install scikit-learn"):
        Digits().prepare_data()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"binarization": "stochastic"}, "unknown binarization 'stochastic'; accepted: dynamic, threshold"),
        ({"threshold": 1.0}, "threshold must be a number in \\[0, 1\\), got 1.0"),
        ({"threshold": float("nan")}, "threshold must be a number in \\[0, 1\\), got nan"),
        ({"batch_size": 0}, "batch_size must be an integer >= 1, got 0"),
        ({"eval_batch_size": 2.5}, "eval_batch_size must be an integer >= 1, got 2.5"),
        ({"num_workers": -1}, "num_workers must be an integer >= 0, got -1"),
        ({"seed": -1}, "seed must be an integer >= 0, got -1"),
        ({"val_size": 0}, "val_size must be an integer >= 1, got 0"),
        ({"test_size": 0}, "test_size must be an integer >= 1, got 0"),
    ],
)
def test_bad_arguments_are_refused_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Digits(**kwargs)


# -- the real datasets ---------------------------------------------------------------------------------
needs_data = pytest.mark.skipif(not SHARED_DATA.exists(), reason=f"real datasets not found in {SHARED_DATA}")


@needs_data
def test_real_mnist():
    train, val, test = MNIST(SHARED_DATA / "mnist").read_splits()
    assert (train.shape, val.shape, test.shape) == ((50000, 784), (10000, 784), (10000, 784))
    assert abs(torch.cat([train, val]).double().mean().item() * 255 - 33.318) < 1e-3  # SOURCE.md
    assert abs(test.double().mean().item() * 255 - 33.791) < 1e-3


@needs_data
def test_real_binarized_mnist():
    data = BinarizedMNIST(SHARED_DATA / "mnist")
    data.setup("fit")
    for split, size, mean in (
        (data.train_data, 50000, 0.13056),
        (data.val_data, 10000, 0.13113),
        (data.test_data, 10000, 0.13251),
    ):
        assert split.shape == (size, 784) and is_binary(split)
        assert abs(split.double().mean().item() - mean) < 1e-5  # SOURCE.md, 5 decimals


@needs_data
def test_real_omniglot():
    data = Omniglot(SHARED_DATA / "omniglot")
    data.setup("fit")
    assert (len(data.train_data) + len(data.val_data), len(data.val_data), len(data.test_data)) == (24345, 1345, 8115)
    assert data.train_data.shape[1] == 784 and is_binary(data.test_data)
    assert 0.07 < data.train_data.mean().item() < 0.09  # about 8% of Omniglot's pixels are ink (SOURCE.md)
