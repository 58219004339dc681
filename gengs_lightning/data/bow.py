"""Bags of words in the NVDM ``.feat`` format (20 Newsgroups, RCV1-v2), stored sparse and densified per batch."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from gengs_lightning.checks import check_int
from gengs_lightning.data.readers import open_text
from gengs_lightning.data.resumable import ResumableDataLoader

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SparseCounts:
    """Word counts of ``num_docs`` documents: a CSR matrix of shape ``(num_docs, vocab_size)``.

    Attributes:
        crow_indices: Row ``d`` holds the entries ``crow_indices[d]:crow_indices[d + 1]``; int64,
            ``(num_docs + 1,)``.
        col_indices: 0-based word ids, unique and sorted within each row; int64, ``(nnz,)``.
        values: Count of each word, all ``>= 1``; float32, ``(nnz,)``.
        labels: Label of each document; int64, ``(num_docs,)``.
        vocab_size: Number of columns.
        num_empty: Empty documents skipped while reading (they are not rows).
    """

    crow_indices: Tensor
    col_indices: Tensor
    values: Tensor
    labels: Tensor
    vocab_size: int
    num_empty: int

    @property
    def num_docs(self) -> int:
        """Number of (non-empty) documents."""
        return self.labels.numel()

    def densify(self, rows: Sequence[int] | Tensor) -> Tensor:
        """Dense counts of the documents ``rows``.

        Args:
            rows: Row indices, repeats allowed.

        Returns:
            Float32 tensor of shape ``(len(rows), vocab_size)``.
        """
        rows = torch.as_tensor(rows, dtype=torch.long)
        starts = self.crow_indices[rows]
        lengths = self.crow_indices[rows + 1] - starts
        batch_rows = torch.repeat_interleave(torch.arange(rows.numel()), lengths)
        # Entry k of the batch is the (k - first entry of its row)-th entry of its document.
        offsets = torch.arange(batch_rows.numel()) - (torch.cumsum(lengths, 0) - lengths)[batch_rows]
        positions = starts[batch_rows] + offsets
        dense = torch.zeros(rows.numel(), self.vocab_size, dtype=torch.float32)
        dense[batch_rows, self.col_indices[positions]] = self.values[positions]
        return dense


def read_vocab(path: str | Path) -> list[str]:
    """Read a ``vocab.new`` file: line ``k`` is the word of id ``k``.

    The word is the first whitespace-separated token of its line; the rest (a count or ``0``) is ignored.
    Gzipped files are read too.

    Args:
        path: The vocabulary file.

    Returns:
        The words in line order (word id ``k`` is ``words[k - 1]``).

    Raises:
        ValueError: If a line has no word, or the file has no lines.
    """
    words = []
    with open_text(path) as file:
        for number, line in enumerate(file, start=1):
            tokens = line.split(maxsplit=1)
            if not tokens:
                raise ValueError(f"{path}, line {number}: no word; expected '<word> [<anything>]' on every line")
            words.append(tokens[0])
    if not words:
        raise ValueError(f"{path}: empty vocabulary; expected one word per line")
    return words


def _parse_document(line: str, vocab_size: int) -> tuple[int, list[int], list[int]] | None:
    """Label, 0-based word ids and counts of one ``.feat`` line, or ``None`` for an empty document.

    Raises:
        ValueError: Naming the offending token (the caller adds the file and line).
    """
    tokens = line.split()
    if not tokens:
        return None
    try:
        label = int(tokens[0])
    except ValueError:
        raise ValueError(f"label {tokens[0]!r} is not an integer") from None
    if len(tokens) == 1:
        return None
    ids, counts = [], []
    for pair in tokens[1:]:
        try:  # a missing or extra ':' fails the unpacking, a non-integer fails int()
            word_id, count = map(int, pair.split(":"))
        except ValueError:
            raise ValueError(f"{pair!r} is not '<id>:<count>' with integer id and count") from None
        if not 1 <= word_id <= vocab_size:
            raise ValueError(f"word id {word_id} in {pair!r} is outside 1..{vocab_size} (vocabulary size {vocab_size})")
        if count < 1:
            raise ValueError(f"count {count} in {pair!r} must be >= 1")
        ids.append(word_id - 1)
        counts.append(count)
    return label, ids, counts


def _to_csr(lengths: list[int], ids: list[int], counts: list[int], vocab_size: int) -> tuple[Tensor, Tensor, Tensor]:
    """CSR ``(crow_indices, col_indices, values)`` of documents given as consecutive runs of ``(id, count)``.

    Document ``d`` is the ``lengths[d]`` entries after those of the documents before it; repeated ids
    within a document are summed.
    """
    rows = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths, dtype=torch.long))
    keys = rows * vocab_size + torch.tensor(ids, dtype=torch.long)  # row-major position in the matrix
    keys, entry = torch.unique(keys, sorted=True, return_inverse=True)
    summands = torch.tensor(counts, dtype=torch.float32)
    values = torch.zeros(keys.numel(), dtype=torch.float32).index_add_(0, entry, summands)
    crow_indices = torch.zeros(len(lengths) + 1, dtype=torch.long)
    crow_indices[1:] = torch.cumsum(torch.bincount(keys // vocab_size, minlength=len(lengths)), 0)
    return crow_indices, keys % vocab_size, values


def read_feat(path: str | Path, vocab_size: int) -> SparseCounts:
    """Read an NVDM ``.feat`` file (plain or gzipped) into sparse word counts.

    Every line is one document, ``<label> <id>:<count> <id>:<count> ...``, with 1-based word ids
    (id ``k`` is line ``k`` of the vocabulary file) in any order; repeated ids within a line are
    summed. Empty documents (a label alone, or a blank line) are skipped and counted.

    Args:
        path: The ``.feat`` file; gzip is detected from its first bytes, not its name.
        vocab_size: Number of words: ids must lie in ``1..vocab_size``.

    Returns:
        The counts of the non-empty documents, in file order.

    Raises:
        ValueError: If ``vocab_size`` is not an integer >= 1, or a line is malformed (a non-integer label, a
            pair that is not ``<integer>:<integer>``, an id outside ``1..vocab_size`` or a count ``< 1``); the
            message names the file, the 1-based line number and the offending token.
    """
    check_int("vocab_size", vocab_size, 1)
    labels, lengths, ids, counts = [], [], [], []
    num_empty = 0
    with open_text(path) as file:
        for number, line in enumerate(file, start=1):
            try:
                document = _parse_document(line, vocab_size)
            except ValueError as error:
                raise ValueError(f"{path}, line {number}: {error}") from None
            if document is None:
                num_empty += 1
                continue
            labels.append(document[0])
            lengths.append(len(document[1]))
            ids.extend(document[1])
            counts.extend(document[2])
    crow_indices, col_indices, values = _to_csr(lengths, ids, counts, vocab_size)
    return SparseCounts(
        crow_indices, col_indices, values, torch.tensor(labels, dtype=torch.long), vocab_size, num_empty
    )


#: The splits each stage's loaders read: the validation split is held out of the training file, and
#: the test file serves testing and prediction.
_STAGE_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}


class _Documents(Dataset):
    """Some rows of a :class:`SparseCounts`: an item is a row index, :meth:`collate` densifies a batch of them."""

    def __init__(self, counts: SparseCounts, rows: Tensor):
        self.counts = counts
        self.rows = rows.tolist()

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> int:
        return self.rows[index]

    def collate(self, rows: list[int]) -> Tensor:
        """Dense float32 counts of a batch of rows, ``(len(rows), vocab_size)``."""
        return self.counts.densify(rows)


class BagOfWords(pl.LightningDataModule):
    """Bag-of-words corpus in the NVDM ``.feat`` format, such as 20 Newsgroups or RCV1-v2.

    ``data_dir`` holds a training file, a test file and a vocabulary (see :func:`read_feat` and
    :func:`read_vocab`); each may also be stored gzipped as ``<name>.gz``. Nothing is read when the
    module is built. :meth:`setup` reads, into sparse storage, only the file its stage needs (once):
    ``fit`` and ``validate`` the training file, of which ``val_size`` documents, drawn by a
    permutation seeded with ``seed``, are held out as the validation set; ``test`` and ``predict``
    the test file. So a folder with only the test file and the vocabulary can be evaluated. Empty
    documents are skipped (their number is logged).

    A batch is a dense float32 tensor of word counts of shape ``(batch, vocab_size)``, built from the
    sparse rows when the batch is collated. Training batches are shuffled, in an order fixed by the seed of
    ``seed_everything`` and the epoch, and a checkpoint resumes them mid-epoch
    (:class:`~gengs_lightning.data.resumable.ResumableDataLoader`).

    Args:
        data_dir: Folder of the three files.
        train_file: Training documents.
        test_file: Test documents.
        vocab_file: Vocabulary, one word per line.
        val_size: Training documents held out for validation.
        batch_size: Training batch size.
        eval_batch_size: Batch size of validation, testing and prediction.
        num_workers: Data-loading worker processes.
        seed: Seed of the validation split.

    Raises:
        ValueError: For a ``batch_size`` or ``eval_batch_size`` that is not an integer >= 1, or a ``val_size``
            or ``num_workers`` that is not an integer >= 0.
    """

    def __init__(
        self,
        data_dir: str,
        train_file: str = "train.feat",
        test_file: str = "test.feat",
        vocab_file: str = "vocab.new",
        val_size: int = 500,
        batch_size: int = 64,
        eval_batch_size: int = 500,
        num_workers: int = 0,
        seed: int = 0,
    ):
        super().__init__()
        check_int("val_size", val_size, 0)
        check_int("batch_size", batch_size, 1)
        check_int("eval_batch_size", eval_batch_size, 1)
        check_int("num_workers", num_workers, 0)
        self.save_hyperparameters()
        self.data_dir = Path(data_dir)
        self.train_file = train_file
        self.test_file = test_file
        self.vocab_file = vocab_file
        self.val_size = val_size
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.seed = seed
        self._vocab: list[str] | None = None
        self._splits: dict[str, _Documents] = {}

    def _path(self, name: str) -> Path:
        """The file ``name`` of ``data_dir``, or else its gzipped ``name.gz``."""
        for candidate in (name, f"{name}.gz"):
            if (self.data_dir / candidate).is_file():
                return self.data_dir / candidate
        raise FileNotFoundError(f"{self.data_dir} has neither {name!r} nor {name + '.gz'!r}")

    @property
    def vocab(self) -> list[str]:
        """The words; word id ``k`` of the files is column ``k - 1`` of a batch.

        Readable before :meth:`setup`: the first access reads the vocabulary file (only), so a model
        can be sized from the data, e.g. by linking ``vocab_size`` in a CLI config.
        """
        if self._vocab is None:
            self._vocab = read_vocab(self._path(self.vocab_file))
        return self._vocab

    @property
    def vocab_size(self) -> int:
        """Number of words: the width of a batch. Readable before :meth:`setup`, like :attr:`vocab`."""
        return len(self.vocab)

    def setup(self, stage: str) -> None:
        """Read the file that ``stage`` needs, unless an earlier call has read it.

        Args:
            stage: ``fit`` or ``validate`` (the training file, split into training and validation
                documents), ``test`` or ``predict`` (the test file).

        Raises:
            ValueError: If ``stage`` is none of these, or ``val_size`` is not smaller than the number of
                training documents.
            FileNotFoundError: Naming ``data_dir`` and the expected names of a missing file.
        """
        if stage not in _STAGE_SPLITS:
            raise ValueError(f"BagOfWords.setup: unknown stage {stage!r}, expected one of {sorted(_STAGE_SPLITS)}")
        if _STAGE_SPLITS[stage][0] in self._splits:
            return
        if stage in ("fit", "validate"):
            self._read_training_file()
        else:
            test = self._read(self.test_file)
            self._splits["test"] = _Documents(test, torch.arange(test.num_docs))

    def _read(self, name: str) -> SparseCounts:
        """Read the ``.feat`` file ``name`` of ``data_dir`` (or its ``.gz``) and log its empty documents."""
        path = self._path(name)
        counts = read_feat(path, self.vocab_size)
        logger.info("skipped %d empty documents in %s", counts.num_empty, path)
        return counts

    def _read_training_file(self) -> None:
        """Read the training file and hold out ``val_size`` of its documents as the validation split."""
        train = self._read(self.train_file)
        if self.val_size >= train.num_docs:
            raise ValueError(
                f"val_size must be smaller than the {train.num_docs} documents of "
                f"{self._path(self.train_file)}, got {self.val_size}"
            )
        permutation = torch.randperm(train.num_docs, generator=torch.Generator().manual_seed(self.seed))
        self._splits["train"] = _Documents(train, permutation[self.val_size :].sort().values)
        self._splits["val"] = _Documents(train, permutation[: self.val_size].sort().values)

    def _split(self, name: str) -> _Documents:
        """The documents of split ``name``, after the :meth:`setup` of a stage that reads it."""
        if name not in self._splits:
            stages = " or ".join(f"setup({stage!r})" for stage, splits in _STAGE_SPLITS.items() if name in splits)
            raise RuntimeError(f"BagOfWords: call {stages} before asking for the {name} split")
        return self._splits[name]

    def word_frequencies(self) -> Tensor:
        """Total count of every word over the training documents (the validation split excluded), ``(V,)``.

        After ``setup("fit")``; a model's decoder bias can start at their log (``decoder_bias="unigram"``).
        """
        documents = self._split("train")
        totals = torch.zeros(self.vocab_size, dtype=torch.float64)
        for start in range(0, len(documents.rows), 1024):
            totals += documents.counts.densify(documents.rows[start : start + 1024]).sum(0, dtype=torch.float64)
        return totals

    @property
    def num_train_docs(self) -> int:
        """Training documents (the validation set excluded); after ``setup("fit")``."""
        return len(self._split("train"))

    @property
    def num_val_docs(self) -> int:
        """Validation documents (``val_size``); after ``setup("fit")`` or ``setup("validate")``."""
        return len(self._split("val"))

    @property
    def num_test_docs(self) -> int:
        """Test (and prediction) documents; after ``setup("test")`` or ``setup("predict")``."""
        return len(self._split("test"))

    def _loader(self, name: str, batch_size: int) -> DataLoader:
        """Loader of split ``name`` yielding dense count batches, in order."""
        documents = self._split(name)
        return DataLoader(documents, batch_size=batch_size, **self._loader_options(documents))

    def _loader_options(self, documents: _Documents) -> dict[str, Any]:
        """Collation and workers, the same for every loader."""
        return {
            "collate_fn": documents.collate,
            "num_workers": self.num_workers,
            "persistent_workers": self.num_workers > 0,
        }

    def train_dataloader(self) -> ResumableDataLoader:
        """Shuffled training batches (this rank's share of them under DDP), resumable mid-epoch."""
        documents = self._split("train")
        return ResumableDataLoader.for_trainer(
            documents, self.trainer, shuffle=True, batch_size=self.batch_size, **self._loader_options(documents)
        )

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size)

    predict_dataloader = test_dataloader
