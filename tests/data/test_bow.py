"""BagOfWords and the NVDM ``.feat`` readers: exact counts, clear errors, splits and batches, real 20News data."""

from __future__ import annotations

import gzip
import logging
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from gengs_lightning.data import BagOfWords, read_feat, read_vocab

PRODLDA_20NEWS = Path(__file__).resolve().parents[3] / "shared" / "data" / "20news" / "prodlda_vocab1995"

# Four words (the formats of both 20News vocabularies, one line with a trailing space) and five lines,
# two of them empty documents, ids unsorted, id 4 repeated in the third line.
VOCAB = "alpha 0\nbeta 6494\ngamma 0 \ndelta 3\n"
FEAT = "3 2:1 1:4\n1 \n7 4:2 2:1 4:3\n\n2 3:5\n"
EXPECTED = torch.tensor([[4.0, 1.0, 0.0, 0.0], [0.0, 1.0, 0.0, 5.0], [0.0, 0.0, 5.0, 0.0]])


def write(path: Path, text: str, gzipped: bool = False) -> Path:
    """Write ``text`` to ``path``, gzip-compressed if asked (the name is kept as given)."""
    if gzipped:
        with gzip.open(path, "wt", encoding="utf-8") as file:
            file.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def write_feat(path: Path, documents: list[dict[int, int]], gzipped: bool = False) -> Path:
    """Write documents ``{1-based id: count}`` as a ``.feat`` file with label 1."""
    lines = ["1 " + " ".join(f"{word_id}:{count}" for word_id, count in document.items()) for document in documents]
    return write(path, "\n".join(lines) + "\n", gzipped)


def dense(documents: list[dict[int, int]], vocab_size: int) -> torch.Tensor:
    """The expected dense count matrix of ``documents``."""
    matrix = torch.zeros(len(documents), vocab_size)
    for row, document in enumerate(documents):
        for word_id, count in document.items():
            matrix[row, word_id - 1] = count
    return matrix


# --- readers -------------------------------------------------------------------------------------------------------


def test_read_vocab_takes_the_first_token_of_each_line(tmp_path):
    assert read_vocab(write(tmp_path / "vocab.new", VOCAB)) == ["alpha", "beta", "gamma", "delta"]
    assert read_vocab(write(tmp_path / "vocab.gz", VOCAB, gzipped=True)) == ["alpha", "beta", "gamma", "delta"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", "empty vocabulary"), ("alpha 0\n \nbeta 0\n", "line 2: no word"), ("alpha 0\n\n", "line 2: no word")],
)
def test_read_vocab_rejects_missing_words(tmp_path, text, expected):
    path = write(tmp_path / "vocab.new", text)
    with pytest.raises(ValueError, match=expected) as error:
        read_vocab(path)
    assert str(path) in str(error.value)


@pytest.mark.parametrize(("name", "gzipped"), [("train.feat", False), ("train.feat.gz", True), ("train.feat", True)])
def test_read_feat_gives_the_exact_counts(tmp_path, name, gzipped):
    counts = read_feat(write(tmp_path / name, FEAT, gzipped), vocab_size=4)
    assert counts.num_docs == 3
    assert counts.num_empty == 2
    assert counts.labels.tolist() == [3, 7, 2]
    assert torch.equal(counts.densify(range(3)), EXPECTED)  # id 4 of line 3 summed: 2 + 3
    assert torch.equal(counts.densify([2, 0, 2]), EXPECTED[[2, 0, 2]])
    assert not torch.equal(counts.densify(range(3)), EXPECTED.roll(1, dims=0))  # the comparison can fail
    assert counts.crow_indices.dtype == counts.col_indices.dtype == torch.int64
    assert counts.values.dtype == torch.float32
    assert counts.col_indices.tolist() == [0, 1, 1, 3, 2]  # sorted and unique within each row


def test_read_feat_of_only_empty_documents(tmp_path):
    counts = read_feat(write(tmp_path / "empty.feat", "1\n\n2 \n"), vocab_size=4)
    assert (counts.num_docs, counts.num_empty) == (0, 3)
    assert counts.densify([]).shape == (0, 4)


@pytest.mark.parametrize(
    ("line", "token", "reason"),
    [
        ("x 1:1", "'x'", "label 'x' is not an integer"),
        ("1.0 1:1", "'1.0'", "label '1.0' is not an integer"),
        ("1 12", "'12'", "is not '<id>:<count>'"),
        ("1 a:3", "'a:3'", "is not '<id>:<count>'"),
        ("1 3:x", "'3:x'", "is not '<id>:<count>'"),
        ("1 1:2:3", "'1:2:3'", "is not '<id>:<count>'"),
        ("1 3:0", "'3:0'", "count 0 in '3:0' must be >= 1"),
        ("1 3:-1", "'3:-1'", "count -1 in '3:-1' must be >= 1"),
        ("1 0:1", "'0:1'", "outside 1..4 (vocabulary size 4)"),
        ("1 5:1", "'5:1'", "outside 1..4 (vocabulary size 4)"),
    ],
)
@pytest.mark.parametrize("gzipped", [False, True])
def test_read_feat_names_file_line_and_token_of_malformed_input(tmp_path, line, token, reason, gzipped):
    path = write(tmp_path / "bad.feat", f"1 1:1\n\n{line} 2:1\n1 2:2\n", gzipped)
    with pytest.raises(ValueError) as error:
        read_feat(path, vocab_size=4)
    message = str(error.value)
    assert f"{path}, line 3: " in message
    assert token in message
    assert reason in message


def test_read_feat_rejects_an_empty_vocabulary(tmp_path):
    with pytest.raises(ValueError, match="vocab_size must be an integer >= 1, got 0"):
        read_feat(write(tmp_path / "train.feat", FEAT), vocab_size=0)


# --- BagOfWords: files -----------------------------------------------------------------------------------------------


def write_small_set(data_dir: Path, gzipped: bool = False) -> Path:
    """The four-word vocabulary with FEAT as training and test file."""
    data_dir.mkdir(exist_ok=True)
    suffix = ".gz" if gzipped else ""
    write(data_dir / f"train.feat{suffix}", FEAT, gzipped)
    write(data_dir / f"test.feat{suffix}", FEAT.replace("\n\n", "\n"), gzipped)
    write(data_dir / "vocab.new", VOCAB)
    return data_dir


def test_nothing_is_read_when_built(tmp_path):
    BagOfWords(str(tmp_path / "missing"))  # no error
    data = BagOfWords(str(tmp_path / "later"), val_size=1)
    write_small_set(tmp_path / "later")  # the files appear after the module is built
    data.setup("fit")
    data.setup("test")
    assert (data.num_train_docs, data.num_val_docs, data.num_test_docs) == (2, 1, 3)


def test_vocab_size_before_setup_reads_only_the_vocabulary(tmp_path):
    write(tmp_path / "vocab.new", VOCAB)  # no .feat files at all
    data = BagOfWords(str(tmp_path))
    assert data.vocab_size == 4
    assert data.vocab == ["alpha", "beta", "gamma", "delta"]
    with pytest.raises(RuntimeError, match=r"call setup\('fit'\) before asking for the train split"):
        _ = data.num_train_docs


@pytest.mark.parametrize(
    ("stage", "present", "loaders"),
    [
        ("fit", "train.feat", ["train_dataloader", "val_dataloader"]),
        ("validate", "train.feat", ["val_dataloader"]),
        ("test", "test.feat.gz", ["test_dataloader"]),
        ("predict", "test.feat.gz", ["predict_dataloader"]),
    ],
)
def test_each_stage_reads_only_the_file_it_needs(tmp_path, stage, present, loaders):
    """A folder with the vocabulary and only the one corpus file a stage uses is enough for that stage."""
    write(tmp_path / "vocab.new", VOCAB)
    write(tmp_path / present, FEAT, gzipped=present.endswith(".gz"))
    data = BagOfWords(str(tmp_path), val_size=1, eval_batch_size=2)
    data.setup(stage)
    documents = torch.cat([batch for loader in loaders for batch in getattr(data, loader)()])
    expected = EXPECTED[[2]] if stage == "validate" else EXPECTED  # the seed-0 split holds out document 2
    assert sorted(documents.tolist()) == sorted(expected.tolist())
    other = "test" if stage in ("fit", "validate") else "fit"
    with pytest.raises(FileNotFoundError, match="has neither"):
        data.setup(other)  # the other file is missing: it was never needed before


def test_each_file_is_read_once_whatever_the_stages(tmp_path, caplog):
    data = BagOfWords(str(write_small_set(tmp_path)), val_size=1)
    caplog.set_level(logging.INFO, logger="gengs_lightning.data.bow")
    for stage in ("fit", "validate", "test", "predict", "fit", "test"):
        data.setup(stage)
    read = [record.getMessage() for record in caplog.records if record.name == "gengs_lightning.data.bow"]
    assert len(read) == 2 and read[0].endswith("train.feat") and read[1].endswith("test.feat")
    assert (data.num_train_docs, data.num_val_docs, data.num_test_docs) == (2, 1, 3)


def test_setup_rejects_an_unknown_stage(tmp_path):
    with pytest.raises(
        ValueError, match=r"unknown stage 'training', expected one of \['fit', 'predict', 'test', 'validate'\]"
    ):
        BagOfWords(str(write_small_set(tmp_path))).setup("training")


@pytest.mark.parametrize(
    ("missing", "stages"), [("train.feat", ["fit", "validate"]), ("test.feat", ["test", "predict"]), ("vocab.new", [])]
)
def test_missing_files_are_named(tmp_path, missing, stages):
    write_small_set(tmp_path)
    (tmp_path / missing).unlink()
    for stage in stages or ["fit", "validate", "test", "predict"]:
        with pytest.raises(FileNotFoundError) as error:
            BagOfWords(str(tmp_path)).setup(stage)
        assert str(error.value) == f"{tmp_path} has neither '{missing}' nor '{missing}.gz'"


@pytest.mark.parametrize("gzipped", [False, True])
def test_setup_logs_the_empty_documents_of_each_file(tmp_path, caplog, gzipped):
    data = BagOfWords(str(write_small_set(tmp_path, gzipped)), val_size=1)
    caplog.set_level(logging.INFO, logger="gengs_lightning.data.bow")
    data.setup("fit")
    data.setup("test")
    records = [record.getMessage() for record in caplog.records if record.name == "gengs_lightning.data.bow"]
    suffix = ".gz" if gzipped else ""
    assert records == [
        f"skipped 2 empty documents in {tmp_path / ('train.feat' + suffix)}",
        f"skipped 1 empty documents in {tmp_path / ('test.feat' + suffix)}",  # FEAT less its blank line: "1 " is left
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"val_size": -1}, "val_size must be an integer >= 0, got -1"),
        ({"num_workers": -2}, "num_workers must be an integer >= 0, got -2"),
        ({"batch_size": 0}, "batch_size must be an integer >= 1, got 0"),
        ({"eval_batch_size": 0}, "eval_batch_size must be an integer >= 1, got 0"),
        ({"batch_size": True}, "batch_size must be an integer >= 1, got True"),
    ],
)
def test_rejects_bad_sizes(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BagOfWords("unused", **kwargs)


def test_rejects_a_validation_set_as_large_as_the_training_set(tmp_path):
    data = BagOfWords(str(write_small_set(tmp_path)), val_size=3)
    with pytest.raises(ValueError, match=r"val_size must be smaller than the 3 documents of .*train.feat, got 3"):
        data.setup("fit")


# --- BagOfWords: splits and batches ----------------------------------------------------------------------------------

VOCAB_SIZE = 6
# Word 1 of document i has count i + 1, which identifies the document in a dense batch.
TRAIN_DOCS = [{2 + i % 5: 1 + i % 3, 1: i + 1} for i in range(30)]
TEST_DOCS = [{1: 100 + i, 6: 2} for i in range(7)]


@pytest.fixture
def corpus_dir(tmp_path: Path) -> Path:
    write_feat(tmp_path / "train.feat", TRAIN_DOCS)
    write_feat(tmp_path / "test.feat", TEST_DOCS)
    write(tmp_path / "vocab.new", "".join(f"w{k} 0\n" for k in range(VOCAB_SIZE)))
    return tmp_path


def loaded(corpus_dir: Path, **kwargs) -> BagOfWords:
    data = BagOfWords(str(corpus_dir), **kwargs)
    data.setup("fit")
    data.setup("test")
    return data


def doc_ids(batches) -> list[int]:
    """Which training documents the rows of ``batches`` are (from the count of word 1)."""
    return [int(count) - 1 for batch in batches for count in batch[:, 0]]


def test_split_sizes(corpus_dir):
    data = loaded(corpus_dir, val_size=8)
    assert (data.num_train_docs, data.num_val_docs, data.num_test_docs) == (22, 8, 7)
    assert data.vocab_size == VOCAB_SIZE


def test_validation_set_is_disjoint_and_fixed_by_the_seed(corpus_dir):
    def split(seed: int) -> tuple[list[int], list[int]]:
        data = loaded(corpus_dir, val_size=8, seed=seed)
        return doc_ids(data.train_dataloader()), doc_ids(data.val_dataloader())

    train, val = split(seed=0)
    assert len(val) == len(set(val)) == 8
    assert not set(train) & set(val)
    assert sorted(train + val) == list(range(30))
    assert sorted(split(seed=0)[1]) == sorted(val)
    assert sorted(split(seed=1)[1]) != sorted(val)


def test_an_epoch_of_training_batches_is_the_training_set_once(corpus_dir):
    data = loaded(corpus_dir, val_size=8, batch_size=4)
    torch.manual_seed(0)
    batches = list(data.train_dataloader())
    assert [batch.shape for batch in batches] == [(4, VOCAB_SIZE)] * 5 + [(2, VOCAB_SIZE)]
    assert all(batch.dtype == torch.float32 for batch in batches)
    ids = doc_ids(batches)
    assert len(ids) == len(set(ids)) == 22
    assert set(ids) == set(range(30)) - set(doc_ids(data.val_dataloader()))
    assert ids != sorted(ids)  # shuffled
    expected = dense(TRAIN_DOCS, VOCAB_SIZE)
    assert torch.equal(torch.cat(batches), expected[ids])
    assert torch.cat(batches).sum(1).tolist() == [sum(TRAIN_DOCS[i].values()) for i in ids]


def test_the_training_order_is_fixed_by_the_seed_and_the_epoch_and_resumes_mid_epoch(corpus_dir, monkeypatch):
    """The order of ``seed_everything``'s seed (``PL_GLOBAL_SEED``) and the epoch; nothing drawn from torch's generator."""
    monkeypatch.setenv("PL_GLOBAL_SEED", "3")
    data = loaded(corpus_dir, val_size=8, batch_size=4)
    torch.manual_seed(0)
    expected = torch.rand(2)
    torch.manual_seed(0)
    loader = data.train_dataloader()
    epochs = [doc_ids(loader) for _ in range(2)]
    assert torch.equal(torch.rand(2), expected)
    assert epochs[0] != epochs[1] and sorted(epochs[0]) == sorted(epochs[1])
    assert doc_ids(data.train_dataloader()) == epochs[0]
    monkeypatch.setenv("PL_GLOBAL_SEED", "4")
    assert doc_ids(data.train_dataloader()) != epochs[0]
    monkeypatch.setenv("PL_GLOBAL_SEED", "3")
    resumed = data.train_dataloader()
    resumed.load_state_dict({"epoch": 1, "batches": 2})  # two of epoch 1's six batches trained on
    assert doc_ids(resumed) == epochs[1][8:]


def test_evaluation_batches(corpus_dir):
    data = loaded(corpus_dir, val_size=8, eval_batch_size=5)
    assert [len(batch) for batch in data.val_dataloader()] == [5, 3]
    for loader in (data.test_dataloader(), data.predict_dataloader()):
        batches = list(loader)
        assert [batch.shape for batch in batches] == [(5, VOCAB_SIZE), (2, VOCAB_SIZE)]
        assert torch.equal(torch.cat(batches), dense(TEST_DOCS, VOCAB_SIZE))  # in file order


class LinearScore(pl.LightningModule):
    """A linear score of the counts; records how many documents each stage saw."""

    def __init__(self, vocab_size: int):
        super().__init__()
        self.layer = nn.Linear(vocab_size, 1)
        self.seen = {"train": 0, "val": 0}

    def training_step(self, batch, batch_idx):
        self.seen["train"] += len(batch)
        return self.layer(batch).square().mean()

    def validation_step(self, batch, batch_idx):
        self.seen["val"] += len(batch)

    def predict_step(self, batch, batch_idx):
        return batch.sum(1)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1e-3)


def test_trains_validates_and_predicts_through_a_trainer(corpus_dir):
    data = BagOfWords(str(corpus_dir), val_size=8, batch_size=4, eval_batch_size=5)
    model = LinearScore(data.vocab_size)  # sized before setup
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=1,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=data)
    assert model.seen == {"train": 22, "val": 8}
    assert trainer.global_step == 6
    predictions = torch.cat(trainer.predict(model, datamodule=data))
    assert predictions.tolist() == [sum(document.values()) for document in TEST_DOCS]


# --- RCV1-v2 layout ----------------------------------------------------------------------------------------------------


def test_loads_a_file_set_in_the_rcv1_v2_layout(tmp_path):
    """RCV1-v2 in NVDM format (not available here): 10,000 words, gzipped files, class labels, high ids."""
    write(tmp_path / "vocab.new", "".join(f"word{k} {10 * k} \n" for k in range(1, 10_001)))
    train = "5 10000:3 1:2 9999:1 5000:4\n17 9876:2 10000:1\n2 1:1\n9 \n"
    write(tmp_path / "train.feat.gz", train, gzipped=True)
    write(tmp_path / "test.feat.gz", "3 10000:1 10000:6\n", gzipped=True)
    data = BagOfWords(str(tmp_path), val_size=1, eval_batch_size=10)
    data.setup("fit")
    data.setup("test")
    assert data.vocab_size == 10_000
    assert data.vocab[9999] == "word10000"
    assert (data.num_train_docs, data.num_val_docs, data.num_test_docs) == (2, 1, 1)
    documents = torch.cat([*data.train_dataloader(), *data.val_dataloader()])
    assert documents.shape == (3, 10_000)
    first = documents[documents[:, 9999] == 3]
    assert len(first) == 1
    assert {k: first[0, k].item() for k in first[0].nonzero().flatten().tolist()} == {0: 2, 4999: 4, 9998: 1, 9999: 3}
    assert sorted(documents.sum(1).tolist()) == [1, 3, 10]
    (test,) = data.test_dataloader()
    assert test.nonzero().tolist() == [[0, 9999]]
    assert test[0, 9999] == 7  # repeated id summed
    write(tmp_path / "bad.feat", "1 10001:1\n")
    with pytest.raises(ValueError, match="outside 1..10000"):
        read_feat(tmp_path / "bad.feat", data.vocab_size)


# --- real data -------------------------------------------------------------------------------------------------------

needs_20news = pytest.mark.skipif(not PRODLDA_20NEWS.exists(), reason=f"shared 20News data not at {PRODLDA_20NEWS}")


@needs_20news
@pytest.mark.parametrize(
    ("name", "num_docs", "num_tokens", "nonzeros"),
    [("train.feat.gz", 11_258, 991_493, 629_540), ("test.feat.gz", 7_487, 629_312, 410_358)],
)
def test_reads_the_prodlda_20news_corpus(name, num_docs, num_tokens, nonzeros):
    vocab = read_vocab(PRODLDA_20NEWS / "vocab.new")
    start = time.perf_counter()
    counts = read_feat(PRODLDA_20NEWS / name, len(vocab))
    print(f"read_feat({name}): {time.perf_counter() - start:.2f} s")
    assert (len(vocab), vocab[:3]) == (1_995, ["_eos_", "write", "one"])
    assert (counts.num_docs, counts.num_empty) == (num_docs, 1)  # the final line "1 "
    assert counts.values.sum().item() == num_tokens
    assert counts.col_indices.numel() == nonzeros
    assert counts.col_indices.min().item() == 1  # id 1, _eos_, never occurs
    assert counts.labels.unique().tolist() == [1]


@needs_20news
def test_the_prodlda_20news_corpus_through_the_datamodule():
    data = BagOfWords(str(PRODLDA_20NEWS))  # the files are gzipped: train.feat.gz, test.feat.gz
    data.setup("fit")
    data.setup("test")
    assert (data.num_train_docs, data.num_val_docs, data.num_test_docs) == (10_758, 500, 7_487)
    train = [*data.train_dataloader(), *data.val_dataloader()]
    assert sum(batch.sum().item() for batch in train) == 991_493
    assert sum(batch.count_nonzero().item() for batch in train) == 629_540
    assert sum(batch.sum().item() for batch in data.test_dataloader()) == 629_312
