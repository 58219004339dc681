"""Binary image LightningDataModules of the VAE experiments: MNIST, binarized MNIST, Omniglot and 8x8 digits.

Every batch is a float32 tensor ``(B, H*W)`` of zeros and ones, without labels. Grey-level datasets are
binarised either dynamically (a fresh ``x ~ Bernoulli(grey)`` for every training batch, fixed draws for
validation and test) or by a threshold; see :class:`BinaryImageDataModule`.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader

from gengs_lightning.checks import check_choice, check_int, check_number
from gengs_lightning.data.readers import (
    MATLAB_MAGIC,
    read_amat,
    read_idx,
    read_mat,
    read_omniglot_npz,
)
from gengs_lightning.data.resumable import ResumableDataLoader

Binarization = Literal["dynamic", "threshold"]
_BINARIZATIONS = ("dynamic", "threshold")


def find_file(directories: Sequence[Path], names: Sequence[str], what: str) -> Path:
    """The first of ``names`` that exists, looking in ``directories`` in order.

    Raises:
        FileNotFoundError: None exists; the message names the directories and every accepted file name.
    """
    for directory in directories:
        for name in names:
            if (directory / name).is_file():
                return directory / name
    raise FileNotFoundError(
        f"{what} not found: expected {' or '.join(names)} in {' or '.join(str(d) for d in directories)}"
    )


def hold_out(data: Tensor, size: int, name: str, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Split ``size`` rows chosen by a random permutation off ``data``.

    Args:
        data: Rows to split.
        size: Number of rows held out.
        name: Name of ``size`` for the error message (``"val_size"``).
        generator: Generator of the permutation.

    Returns:
        The rows kept and the rows held out, each in their order in ``data``.

    Raises:
        ValueError: ``size`` leaves no row.
    """
    if size >= len(data):
        raise ValueError(f"{name}={size} leaves no training images: it is held out of only {len(data)}")
    permutation = torch.randperm(len(data), generator=generator)
    return data[permutation[size:].sort().values], data[permutation[:size].sort().values]


def downsample(ink: Tensor, side: int, chunk: int = 2048) -> Tensor:
    """Area-average square binary images down to ``side x side`` grey levels.

    Uses ``F.interpolate(mode="area")``, that is adaptive average pooling: output pixel ``i`` averages the
    input rows (and columns) ``floor(i n / side)`` to ``ceil((i + 1) n / side) - 1`` with equal weights,
    so for 105 -> 28 the windows are 4 or 5 pixels wide and neighbouring windows may share one pixel.

    Args:
        ink: ``uint8`` images ``(..., n, n)`` of 0 and 1.
        side: Output side.
        chunk: Images converted to float at a time, to bound memory.

    Returns:
        float32 grey levels in [0, 1], ``(..., side * side)``.
    """
    flat = ink.reshape(-1, 1, *ink.shape[-2:])
    grey = torch.empty(len(flat), side * side)
    for start in range(0, len(flat), chunk):
        images = flat[start : start + chunk].float()
        grey[start : start + chunk] = F.interpolate(images, size=(side, side), mode="area").flatten(1)
    return grey.reshape(*ink.shape[:-2], side * side)


class BinaryImageDataModule(pl.LightningDataModule):
    """Base class of binary image datasets: batches are float32 ``(B, H*W)`` tensors of 0 and 1, no labels.

    A subclass sets :attr:`image_shape` and writes :meth:`read_splits` (grey levels of the three splits)
    and, when it reads files, :meth:`files`. Nothing is read in ``__init__``; :meth:`prepare_data` checks
    that the files exist (on rank 0, before anything else) and :meth:`setup` reads every split once, for
    any stage.

    Binarisation of grey levels ``g`` in [0, 1]:

    * ``"dynamic"``: every training batch is a fresh draw ``x ~ Bernoulli(g)``, made in
      :meth:`on_after_batch_transfer` on the batch's device while the trainer is training, so every epoch
      sees new draws (from the global torch generator: :func:`pytorch_lightning.seed_everything` fixes them).
      Validation and test images are drawn once in :meth:`setup` with a generator seeded by ``seed``, so
      evaluation sets are fixed and the same on every DDP rank.
    * ``"threshold"``: ``x = g > threshold`` for every split.
    * ``None``: the images are binary already and used as they are (:class:`BinarizedMNIST`).

    The training loader shuffles, in an order fixed by ``seed_everything`` and the epoch, and a checkpoint
    resumes it mid-epoch (:class:`~gengs_lightning.data.resumable.ResumableDataLoader`); the prediction
    loader is the test set.

    Args:
        binarization: ``"dynamic"``, ``"threshold"``, or ``None`` for binary data.
        threshold: Threshold of ``"threshold"`` binarisation, in [0, 1).
        batch_size: Training batch size.
        eval_batch_size: Batch size of validation, test and prediction.
        num_workers: Worker processes of every loader.
        seed: Seed of the validation split and of the evaluation draws.

    Attributes:
        train_data: Training images after :meth:`setup`: grey levels under ``"dynamic"``, else 0 and 1.
        val_data: Validation images after :meth:`setup`, 0 and 1.
        test_data: Test images after :meth:`setup`, 0 and 1.
    """

    #: ``(H, W)`` of one image.
    image_shape: tuple[int, int]

    def __init__(
        self,
        binarization: Binarization | None = "dynamic",
        threshold: float = 0.5,
        batch_size: int = 100,
        eval_batch_size: int = 1000,
        num_workers: int = 0,
        seed: int = 0,
    ):
        super().__init__()
        if binarization is not None:
            check_choice("binarization", binarization, _BINARIZATIONS)
        check_number("threshold", threshold, 0, 1, low_closed=True)
        check_int("batch_size", batch_size, 1)
        check_int("eval_batch_size", eval_batch_size, 1)
        check_int("num_workers", num_workers, 0)
        check_int("seed", seed, 0)
        self.binarization = binarization
        self.threshold = threshold
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.train_data: Tensor | None = None
        self.val_data: Tensor | None = None
        self.test_data: Tensor | None = None

    @property
    def data_dim(self) -> int:
        """Pixels per image, ``H * W``."""
        return self.image_shape[0] * self.image_shape[1]

    def files(self) -> dict[str, Path]:
        """The files :meth:`read_splits` reads, by role; none by default.

        Raises:
            FileNotFoundError: A file is missing; the message names the directory and the accepted names.
        """
        return {}

    @abstractmethod
    def read_splits(self) -> tuple[Tensor, Tensor, Tensor]:
        """Grey levels of the training, validation and test images: float32 ``(N, H*W)`` in [0, 1]."""

    def prepare_data(self) -> None:
        """Check that the files exist, so that a missing one stops the run before anything is read."""
        self.files()

    def setup(self, stage: str) -> None:
        """Read the three splits (once, whatever the stage) and binarise what is binarised once."""
        if self.train_data is not None:
            return
        train, val, test = self.read_splits()
        if self.binarization is None:
            if any(((split != 0) & (split != 1)).any() for split in (train, val, test)):
                raise ValueError(
                    f"binarization=None uses the images as they are, but {type(self).__name__} has grey levels; "
                    f"accepted: {', '.join(_BINARIZATIONS)}"
                )
            self.train_data, self.val_data, self.test_data = train, val, test
            return
        generator = torch.Generator().manual_seed(self.seed)
        self.val_data = self._binarize(val, generator)
        self.test_data = self._binarize(test, generator)
        self.train_data = train if self.binarization == "dynamic" else self._binarize(train, generator)

    def _binarize(self, grey: Tensor, generator: torch.Generator) -> Tensor:
        if self.binarization == "dynamic":
            return torch.bernoulli(grey, generator=generator)
        return (grey > self.threshold).float()

    def on_after_batch_transfer(self, batch: Tensor, dataloader_idx: int) -> Tensor:
        """Draw ``x ~ Bernoulli(batch)`` for a training batch under dynamic binarisation; else keep ``batch``."""
        if self.binarization == "dynamic" and self.trainer is not None and self.trainer.training:
            return torch.bernoulli(batch)
        return batch

    def _loader(self, data: Tensor | None, batch_size: int) -> DataLoader:
        if data is None:
            raise RuntimeError(f"call {type(self).__name__}.setup() before asking for a dataloader")
        return DataLoader(
            data,
            batch_size=batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        if self.train_data is None:
            raise RuntimeError(f"call {type(self).__name__}.setup() before asking for a dataloader")
        return ResumableDataLoader.for_trainer(
            self.train_data,
            self.trainer,
            shuffle=True,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_data, self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_data, self.eval_batch_size)

    predict_dataloader = test_dataloader


class TrainTestImages(BinaryImageDataModule):
    """Base class of grey-level datasets whose files hold training and test images: MNIST, Omniglot.

    Owns their constructor (the checks and the attributes) and the validation split: ``val_size``
    training images, chosen by a permutation seeded with ``seed`` (:func:`hold_out`), are the validation
    set. A subclass writes :meth:`files` and :meth:`read_train_test`; its ``__init__`` only declares the
    arguments with its defaults (its own ``val_size``; the CLI reads them there) and saves them as
    hyperparameters.

    Args:
        data_dir: Directory of the files.
        binarization: ``"dynamic"`` or ``"threshold"`` (see :class:`BinaryImageDataModule`).
        threshold: Threshold of ``"threshold"`` binarisation.
        val_size: Validation images held out of the training images.
        batch_size: Training batch size.
        eval_batch_size: Batch size of validation, test and prediction.
        num_workers: Worker processes of every loader.
        seed: Seed of the validation split and of the evaluation draws.

    Raises:
        ValueError: For a ``val_size`` that is not an integer >= 1, and as :class:`BinaryImageDataModule`.
    """

    def __init__(
        self,
        data_dir: str | Path,
        binarization: Binarization,
        threshold: float,
        val_size: int,
        batch_size: int,
        eval_batch_size: int,
        num_workers: int,
        seed: int,
    ):
        super().__init__(binarization, threshold, batch_size, eval_batch_size, num_workers, seed)
        self.val_size = check_int("val_size", val_size, 1)
        self.data_dir = Path(data_dir)

    @abstractmethod
    def read_train_test(self) -> tuple[Tensor, Tensor]:
        """Grey levels of all training and of the test images: float32 ``(N, H*W)`` in [0, 1]."""

    def read_splits(self) -> tuple[Tensor, Tensor, Tensor]:
        train, test = self.read_train_test()
        train, val = hold_out(train, self.val_size, "val_size", torch.Generator().manual_seed(self.seed))
        return train, val, test


class MNIST(TrainTestImages):
    """MNIST digits (LeCun, Cortes and Burges) from the original IDX files, grey levels ``pixel / 255``.

    Reads ``train-images-idx3-ubyte`` and ``t10k-images-idx3-ubyte`` in ``data_dir``, each plain or
    gzipped with a ``.gz`` suffix (the plain file is preferred when both exist). The 60,000 training
    images give ``60000 - val_size`` training and ``val_size`` validation images (a permutation seeded
    with ``seed``; 50,000 / 10,000 by default); the test set is the 10,000 t10k images.

    Args:
        data_dir: Directory of the IDX files.
        binarization: ``"dynamic"`` or ``"threshold"`` (see :class:`BinaryImageDataModule`).
        threshold: Threshold of ``"threshold"`` binarisation.
        val_size: Validation images held out of the training file.
        batch_size: Training batch size.
        eval_batch_size: Batch size of validation, test and prediction.
        num_workers: Worker processes of every loader.
        seed: Seed of the validation split and of the evaluation draws.
    """

    image_shape = (28, 28)
    TRAIN_FILE = "train-images-idx3-ubyte"
    TEST_FILE = "t10k-images-idx3-ubyte"

    def __init__(
        self,
        data_dir: str | Path,
        binarization: Binarization = "dynamic",
        threshold: float = 0.5,
        val_size: int = 10000,
        batch_size: int = 100,
        eval_batch_size: int = 1000,
        num_workers: int = 0,
        seed: int = 0,
    ):
        super().__init__(data_dir, binarization, threshold, val_size, batch_size, eval_batch_size, num_workers, seed)
        self.save_hyperparameters()

    def files(self) -> dict[str, Path]:
        return {
            split: find_file((self.data_dir,), (name, f"{name}.gz"), f"MNIST {split} images")
            for split, name in (("train", self.TRAIN_FILE), ("test", self.TEST_FILE))
        }

    def read_train_test(self) -> tuple[Tensor, Tensor]:
        files = self.files()
        return self._read_grey(files["train"]), self._read_grey(files["test"])

    def _read_grey(self, path: Path) -> Tensor:
        images = read_idx(path)
        if images.shape[1:] != self.image_shape:
            raise ValueError(f"{path}: IDX array of shape {tuple(images.shape)}, expected images (N, 28, 28)")
        return images.flatten(1).float() / 255


class BinarizedMNIST(BinaryImageDataModule):
    """The statically binarised MNIST of Larochelle and Murray (2011): 50,000 / 10,000 / 10,000 binary images.

    Reads ``binarized_mnist_{train,valid,test}`` with the extension ``.amat`` (text, see
    :func:`~gengs_lightning.data.readers.read_amat`) or ``.mat`` (MATLAB, variable ``X``), in ``data_dir``
    or ``data_dir/binarized_larochelle`` (in that order, ``.amat`` before ``.mat``). The reader is chosen
    by the content: some copies (mingzhang-yin/ARM-gradient) are MATLAB files called ``.amat``. The
    validation set is the file's ``valid`` split; the images are binary already and are not binarised
    again, so there is neither binarisation nor seed to set.

    Args:
        data_dir: Directory of the files, or of their ``binarized_larochelle`` folder.
        batch_size: Training batch size.
        eval_batch_size: Batch size of validation, test and prediction.
        num_workers: Worker processes of every loader.
    """

    image_shape = (28, 28)
    SPLITS = ("train", "valid", "test")
    SUBDIRECTORY = "binarized_larochelle"

    def __init__(self, data_dir: str | Path, batch_size: int = 100, eval_batch_size: int = 1000, num_workers: int = 0):
        super().__init__(None, batch_size=batch_size, eval_batch_size=eval_batch_size, num_workers=num_workers)
        self.save_hyperparameters()
        self.data_dir = Path(data_dir)

    def files(self) -> dict[str, Path]:
        directories = (self.data_dir, self.data_dir / self.SUBDIRECTORY)
        return {
            split: find_file(
                directories,
                (f"binarized_mnist_{split}.amat", f"binarized_mnist_{split}.mat"),
                f"binarized MNIST {split} split",
            )
            for split in self.SPLITS
        }

    def read_splits(self) -> tuple[Tensor, Tensor, Tensor]:
        train, val, test = (self._read_binary(path) for path in self.files().values())
        return train, val, test

    def _read_binary(self, path: Path) -> Tensor:
        with open(path, "rb") as file:
            is_matlab = file.read(len(MATLAB_MAGIC)) == MATLAB_MAGIC
        images = read_mat(path) if is_matlab else read_amat(path)
        if images.ndim != 2 or images.shape[1] != self.data_dim or (images > 1).any():
            raise ValueError(
                f"{path}: {tuple(images.shape)} with values in {images.unique().tolist()[:5]}, "
                f"expected binary images (N, {self.data_dim}) of 0 and 1"
            )
        return images.float()


class Omniglot(TrainTestImages):
    """Omniglot (Lake, Salakhutdinov and Tenenbaum, 2015), all 1,623 characters, area-averaged to 28x28.

    Reads ``images_background.npz`` and ``images_evaluation.npz`` in ``data_dir`` (see
    :func:`~gengs_lightning.data.readers.read_omniglot_npz`), pools their 964 + 659 characters and
    turns every 105x105 ink image into 28x28 grey levels by area averaging (:func:`downsample`,
    ``F.interpolate(mode="area")``). The split is by drawer: for every character, drawers 1-15 are
    training images and drawers 16-20 test images (24,345 / 8,115); ``val_size`` training images chosen
    with ``seed`` are held out for validation. Images are ordered by character (background set, then
    evaluation set), then drawer.

    The 28x28 Omniglot of IWAE (Burda et al., 2016, ``chardata.mat``) also has 24,345 training images,
    but its own train/test split and its own downsampling, which cannot be reproduced from these files:
    numbers on this dataset are not directly comparable to results reported on that one.

    Args:
        data_dir: Directory of the ``.npz`` files.
        binarization: ``"dynamic"`` or ``"threshold"`` (see :class:`BinaryImageDataModule`).
        threshold: Threshold of ``"threshold"`` binarisation.
        val_size: Validation images held out of the training drawers.
        batch_size: Training batch size.
        eval_batch_size: Batch size of validation, test and prediction.
        num_workers: Worker processes of every loader.
        seed: Seed of the validation split and of the evaluation draws.
    """

    image_shape = (28, 28)
    FILES = ("images_background.npz", "images_evaluation.npz")
    #: Drawers 1..TRAIN_DRAWERS of every character are training images, the others test images.
    TRAIN_DRAWERS = 15

    def __init__(
        self,
        data_dir: str | Path,
        binarization: Binarization = "dynamic",
        threshold: float = 0.5,
        val_size: int = 1345,
        batch_size: int = 100,
        eval_batch_size: int = 1000,
        num_workers: int = 0,
        seed: int = 0,
    ):
        super().__init__(data_dir, binarization, threshold, val_size, batch_size, eval_batch_size, num_workers, seed)
        self.save_hyperparameters()

    def files(self) -> dict[str, Path]:
        return {name: find_file((self.data_dir,), (name,), "Omniglot") for name in self.FILES}

    def read_train_test(self) -> tuple[Tensor, Tensor]:
        side = self.image_shape[0]
        grey = torch.cat([downsample(read_omniglot_npz(path), side) for path in self.files().values()])
        train = grey[:, : self.TRAIN_DRAWERS].reshape(-1, self.data_dim)
        return train, grey[:, self.TRAIN_DRAWERS :].reshape(-1, self.data_dim)


def _load_digits() -> Callable:
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:
        raise ImportError("Digits needs scikit-learn's bundled digits: pip install scikit-learn") from error
    return load_digits


class Digits(BinaryImageDataModule):
    """The 1,797 8x8 handwritten digits bundled with scikit-learn (UCI), grey levels ``value / 16``.

    Read with :func:`sklearn.datasets.load_digits` (no download). ``test_size`` images chosen with
    ``seed`` form the test set and ``val_size`` of the others the validation set; the rest (1,200 by
    default) are training images. Small enough for tests and quick experiments on a CPU.

    Args:
        binarization: ``"dynamic"`` or ``"threshold"`` (see :class:`BinaryImageDataModule`).
        threshold: Threshold of ``"threshold"`` binarisation.
        val_size: Validation images.
        test_size: Test images.
        batch_size: Training batch size.
        eval_batch_size: Batch size of validation, test and prediction.
        num_workers: Worker processes of every loader.
        seed: Seed of the splits and of the evaluation draws.
    """

    image_shape = (8, 8)
    MAX_VALUE = 16

    def __init__(
        self,
        binarization: Binarization = "dynamic",
        threshold: float = 0.5,
        val_size: int = 297,
        test_size: int = 300,
        batch_size: int = 100,
        eval_batch_size: int = 1000,
        num_workers: int = 0,
        seed: int = 0,
    ):
        super().__init__(binarization, threshold, batch_size, eval_batch_size, num_workers, seed)
        check_int("val_size", val_size, 1)
        check_int("test_size", test_size, 1)
        self.save_hyperparameters()
        self.val_size = val_size
        self.test_size = test_size

    def prepare_data(self) -> None:
        """Check that scikit-learn is installed."""
        _load_digits()

    def read_splits(self) -> tuple[Tensor, Tensor, Tensor]:
        images, _ = _load_digits()(return_X_y=True)
        grey = torch.from_numpy(images).float() / self.MAX_VALUE
        generator = torch.Generator().manual_seed(self.seed)
        rest, test = hold_out(grey, self.test_size, "test_size", generator)
        train, val = hold_out(rest, self.val_size, "val_size", generator)
        return train, val, test
