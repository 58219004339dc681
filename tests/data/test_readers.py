"""File readers: IDX, Larochelle's .amat, MATLAB .mat and Omniglot .npz, on small files written here."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import scipy.io
import torch

from gengs_lightning.data.readers import open_text, read_amat, read_idx, read_mat, read_omniglot_npz


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    """IDX layout: big-endian uint32 magic and sizes, then the uint8 payload."""
    return b"".join(n.to_bytes(4, "big") for n in (magic, *array.shape)) + array.astype(np.uint8).tobytes()


def amat_text(array: np.ndarray) -> str:
    """Larochelle's layout: one row per line, values separated by single spaces."""
    return "".join(" ".join(str(v) for v in row) + "\n" for row in array)


@pytest.fixture
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(3, 4, 5), dtype=np.uint8)  # rows != cols


# -- text, plain or gzipped ----------------------------------------------------------------------------
def test_open_text_sees_through_gzip_by_content_not_name(tmp_path):
    text = "word 3\nmot ü\n"
    (tmp_path / "plain.txt").write_text(text, encoding="utf-8")
    (tmp_path / "vocab.new").write_bytes(gzip.compress(text.encode("utf-8")))  # gzipped, no .gz suffix
    for name in ("plain.txt", "vocab.new"):
        with open_text(tmp_path / name) as file:
            assert file.read() == text


# -- IDX --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "compress"),
    [("plain", False), ("plain.gz", True), ("gzipped-without-suffix", True), ("plain-with-suffix.gz", False)],
)
def test_idx_images_and_labels_round_trip_whatever_the_name(tmp_path, images, name, compress):
    labels = np.arange(3, dtype=np.uint8) + 7
    for suffix, array, magic in (("images", images, 2051), ("labels", labels, 2049)):
        data = idx_bytes(array, magic)
        path = tmp_path / f"{suffix}-{name}"
        path.write_bytes(gzip.compress(data) if compress else data)
        read = read_idx(path)
        assert read.dtype == torch.uint8
        assert torch.equal(read, torch.from_numpy(array))


@pytest.mark.parametrize("compress", [False, True])
def test_idx_wrong_magic_names_file_and_accepted_magics(tmp_path, images, compress):
    data = idx_bytes(images, 1234)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(gzip.compress(data) if compress else data)
    with pytest.raises(ValueError, match="magic number 1234, expected 2051 \\(images\\) or 2049 \\(labels\\)") as info:
        read_idx(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("compress", [False, True])
def test_idx_truncated_payload(tmp_path, images, compress):
    data = idx_bytes(images, 2051)[: 16 + 10]
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(data) if compress else data)
    with pytest.raises(ValueError, match="truncated: header says 3 images of 4x5 \\(60 bytes\\) but 10 bytes follow"):
        read_idx(path)


def test_idx_header_disagrees_with_payload(tmp_path, images):
    path = tmp_path / "labels"
    path.write_bytes(idx_bytes(np.arange(5), 2049) + b"\x00\x01")
    with pytest.raises(
        ValueError, match="labels: trailing data: header says 5 labels \\(5 bytes\\) but 7 bytes follow"
    ):
        read_idx(path)
    path.write_bytes(idx_bytes(images, 2051)[:12])
    with pytest.raises(ValueError, match="truncated: 12 bytes, shorter than the 16-byte IDX header"):
        read_idx(path)


def test_idx_corrupt_gzip_and_missing_file(tmp_path, images):
    path = tmp_path / "broken.gz"
    path.write_bytes(gzip.compress(idx_bytes(images, 2051))[:30])
    with pytest.raises(ValueError, match="broken.gz: corrupt gzip stream"):
        read_idx(path)
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "absent")


# -- Larochelle's .amat --------------------------------------------------------------------------------
def test_amat_round_trip(tmp_path):
    array = np.random.default_rng(1).integers(0, 2, size=(6, 7))
    path = tmp_path / "binarized_mnist_test.amat"
    path.write_text(amat_text(array))
    read = read_amat(path)
    assert read.dtype == torch.uint8
    assert torch.equal(read, torch.from_numpy(array).to(torch.uint8))
    path.write_text(amat_text(array).replace("\n", "\r\n").replace(" ", "\t") + "\n\n")  # other whitespace
    assert torch.equal(read_amat(path), read)


@pytest.mark.parametrize("token", ["2", "10", "0.5", "x"])
def test_amat_value_other_than_0_or_1_names_file_line_and_value(tmp_path, token):
    path = tmp_path / "binarized_mnist_train.amat"
    path.write_text(f"0 1 0\n1 1 1\n0 {token} 1\n")
    with pytest.raises(ValueError, match=f"line 3: value '{token}', expected 0 or 1") as info:
        read_amat(path)
    assert str(path) in str(info.value)


def test_amat_ragged_rows_and_empty_file(tmp_path):
    path = tmp_path / "binarized_mnist_valid.amat"
    path.write_text("0 1 0 1\n1 1 1\n0 0 0 1\n")
    with pytest.raises(ValueError, match="binarized_mnist_valid.amat: line 2: 3 values, expected 4 as on line 1"):
        read_amat(path)
    path.write_text("\n  \n")
    with pytest.raises(ValueError, match="no rows, expected lines of space-separated 0 and 1"):
        read_amat(path)


def test_amat_that_is_a_matlab_file_says_so(tmp_path):
    path = tmp_path / "binarized_mnist_test.amat"
    scipy.io.savemat(path, {"X": np.zeros((2, 3), np.uint8)})
    with pytest.raises(ValueError, match="a MATLAB .mat file, not Larochelle's text .amat: read it with read_mat"):
        read_amat(path)


# -- MATLAB .mat -----------------------------------------------------------------------------------------
def test_mat_round_trip_and_key(tmp_path):
    array = np.random.default_rng(2).integers(0, 2, size=(5, 9)).astype(np.uint8)
    path = tmp_path / "binarized_mnist_valid.mat"
    scipy.io.savemat(path, {"X": array, "data": array.astype(float) * 3})  # MATLAB's default is double
    assert torch.equal(read_mat(path), torch.from_numpy(array))
    read = read_mat(path, key="data")
    assert read.dtype == torch.uint8
    assert torch.equal(read, torch.from_numpy(array) * 3)


def test_mat_missing_key_lists_the_keys_found(tmp_path):
    path = tmp_path / "binarized_mnist_train.mat"
    scipy.io.savemat(path, {"data": np.zeros((1, 2)), "testdata": np.zeros((1, 2))})
    with pytest.raises(ValueError, match="no variable 'X'; variables found: \\['data', 'testdata'\\]") as info:
        read_mat(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("content", [b"0 1 0\n1 0 1\n", b""])
def test_mat_that_is_not_matlab(tmp_path, content):
    path = tmp_path / "binarized_mnist_train.mat"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="binarized_mnist_train.mat: not a MATLAB .mat file"):
        read_mat(path)


@pytest.mark.parametrize("value", [300.0, -1.0, 0.5])
def test_mat_values_that_are_no_bytes(tmp_path, value):
    path = tmp_path / "grey.mat"
    scipy.io.savemat(path, {"X": np.array([[0.0, value]])})
    with pytest.raises(ValueError, match="grey.mat: variable 'X' holds values in .*, expected whole numbers in 0..255"):
        read_mat(path)


# -- Omniglot .npz ---------------------------------------------------------------------------------------
def test_omniglot_npz_returns_ink(tmp_path):
    background = np.random.default_rng(3).random((2, 20, 105, 105)) < 0.9  # True = background
    path = tmp_path / "images_background.npz"
    np.savez_compressed(path, images=background, labels=np.repeat(np.arange(2)[:, None], 20, 1))
    ink = read_omniglot_npz(path)
    assert ink.dtype == torch.uint8
    assert ink.shape == (2, 20, 105, 105)
    assert torch.equal(ink, torch.from_numpy(~background).to(torch.uint8))


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"pictures": np.ones((2, 20, 105, 105), bool)}, "no array 'images'; arrays found: \\['pictures'\\]"),
        (
            {"images": np.ones((2, 20, 28, 28), bool)},
            "'images' is bool \\(2, 20, 28, 28\\), expected bool \\(characters, 20, 105, 105\\)",
        ),
        ({"images": np.ones((2, 19, 105, 105), bool)}, "'images' is bool \\(2, 19, 105, 105\\), expected"),
        ({"images": np.ones((2, 20, 105, 105), np.uint8)}, "'images' is uint8 \\(2, 20, 105, 105\\), expected bool"),
    ],
)
def test_omniglot_npz_wrong_arrays(tmp_path, arrays, message):
    path = tmp_path / "images_evaluation.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=message) as info:
        read_omniglot_npz(path)
    assert str(path) in str(info.value)


def test_omniglot_npz_that_is_no_archive(tmp_path):
    path = tmp_path / "images_background.npz"
    path.write_text("not an archive")
    with pytest.raises(ValueError, match="images_background.npz: not a NumPy .npz archive"):
        read_omniglot_npz(path)
    npy = tmp_path / "images.npy"
    np.save(npy, np.ones((2, 20, 105, 105), bool))
    with pytest.raises(ValueError, match="images.npy: a single .npy array, expected an .npz archive"):
        read_omniglot_npz(npy)
    with pytest.raises(FileNotFoundError):
        read_omniglot_npz(tmp_path / "absent.npz")
