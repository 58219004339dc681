"""Readers of the data files: the image formats of the VAE benchmarks, and text that may be gzipped.

Pure functions of a path: no Lightning, no caching, no downloads. The image readers return ``uint8``
tensors; :func:`open_text` opens the bag-of-words files (:mod:`gengs_lightning.data.bow` parses them).
Every format error is a :class:`ValueError` that names the file, what was found and what was expected.
"""

from __future__ import annotations

import gzip
import os
import zipfile
import zlib
from typing import IO

import numpy as np
import scipy.io
import torch
from torch import Tensor

#: Magic numbers of the IDX files of MNIST (unsigned bytes, 3 and 1 dimensions) and the header sizes in bytes.
IDX_IMAGES = 2051
IDX_LABELS = 2049
_IDX_HEADER_BYTES = {IDX_IMAGES: 16, IDX_LABELS: 8}
_GZIP_MAGIC = b"\x1f\x8b"
#: First bytes of a MATLAB v5 or v7.3 file (its text header).
MATLAB_MAGIC = b"MATLAB"
#: Drawers per character and side of the original images of Omniglot.
OMNIGLOT_DRAWERS = 20
OMNIGLOT_SIDE = 105


def open_text(path: str | os.PathLike) -> IO[str]:
    """Open ``path`` as UTF-8 text, through gzip when it starts with the gzip magic bytes (whatever its name)."""
    with open(path, "rb") as file:
        gzipped = file.read(len(_GZIP_MAGIC)) == _GZIP_MAGIC
    return gzip.open(path, "rt", encoding="utf-8") if gzipped else open(path, encoding="utf-8")


def read_idx(path: str | os.PathLike) -> Tensor:
    """Read an MNIST IDX file of images or labels, gzipped or plain.

    The IDX format (LeCun, Cortes and Burges, http://yann.lecun.com/exdb/mnist/) is a header of big-endian
    ``uint32``: the magic number (2051 for images, 2049 for labels), the count ``N`` and, for images, ``rows``
    and ``cols``; then the ``uint8`` payload, image-major and row-major. A gzip stream is recognised by its
    magic bytes ``1f 8b``, whatever the file is called.

    Args:
        path: The file.

    Returns:
        ``uint8`` images ``(N, rows, cols)`` or labels ``(N,)``.

    Raises:
        ValueError: The gzip stream is corrupt, the magic number is neither 2051 nor 2049, or the payload
            length differs from the one the header gives.
    """
    with open(path, "rb") as file:
        data = file.read()
    if data.startswith(_GZIP_MAGIC):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as error:
            raise ValueError(f"{path}: corrupt gzip stream ({error})") from error
    if len(data) < 4:
        raise ValueError(f"{path}: truncated: {len(data)} bytes, shorter than an IDX magic number (4 bytes)")
    magic = int.from_bytes(data[:4], "big")
    if magic not in _IDX_HEADER_BYTES:
        raise ValueError(
            f"{path}: not an IDX image or label file: magic number {magic}, "
            f"expected {IDX_IMAGES} (images) or {IDX_LABELS} (labels)"
        )
    header_bytes = _IDX_HEADER_BYTES[magic]
    if len(data) < header_bytes:
        raise ValueError(f"{path}: truncated: {len(data)} bytes, shorter than the {header_bytes}-byte IDX header")
    shape = tuple(int.from_bytes(data[i : i + 4], "big") for i in range(4, header_bytes, 4))
    expected = int(np.prod(shape))
    found = len(data) - header_bytes
    if found != expected:
        what = f"{shape[0]} images of {shape[1]}x{shape[2]}" if magic == IDX_IMAGES else f"{shape[0]} labels"
        problem = "truncated" if found < expected else "trailing data"
        raise ValueError(f"{path}: {problem}: header says {what} ({expected} bytes) but {found} bytes follow")
    return torch.from_numpy(np.frombuffer(data, np.uint8, offset=header_bytes).reshape(shape).copy())


def read_amat(path: str | os.PathLike) -> Tensor:
    """Read a binary matrix in Larochelle's text ``.amat`` format.

    One image per line, pixels as the characters ``0`` and ``1`` separated by whitespace (the files of
    Larochelle and Murray, 2011, use single spaces and a newline after each row). Lines holding only
    whitespace are skipped.

    Args:
        path: The file.

    Returns:
        ``uint8`` matrix ``(N, D)`` of zeros and ones, one row per line.

    Raises:
        ValueError: The file is a MATLAB file, has no rows, holds a value other than 0 or 1, or its rows
            differ in length; the message names the line.
    """
    with open(path, "rb") as file:
        data = file.read()
    if data.startswith(MATLAB_MAGIC):
        raise ValueError(f"{path}: a MATLAB .mat file, not Larochelle's text .amat: read it with read_mat")
    chars = np.frombuffer(data, np.uint8)
    space = (chars == ord(" ")) | ((chars >= ord("\t")) & (chars <= ord("\r")))  # what bytes.split() splits at
    newlines = np.flatnonzero(chars == ord("\n"))
    # A value is a token of one character, 0 or 1: flag any other character, and any character that
    # follows a non-space (the second character of a longer token such as "10" or "0.5").
    bad = ~space & ((chars < ord("0")) | (chars > ord("1")))
    bad[1:] |= ~space[1:] & ~space[:-1]
    if bad.any():
        position = int(np.argmax(bad))
        start, end = position, position
        while start > 0 and not space[start - 1]:
            start -= 1
        while end < len(chars) and not space[end]:
            end += 1
        token = data[start : min(end, start + 20)].decode("utf-8", "replace") + ("..." if end > start + 20 else "")
        line = np.searchsorted(newlines, position) + 1
        raise ValueError(f"{path}: line {line}: value {token!r}, expected 0 or 1")
    line_starts = np.concatenate([[0], newlines + 1])
    line_starts = line_starts[line_starts < len(chars)]
    lengths = np.add.reduceat(~space, line_starts, dtype=np.int64) if line_starts.size else line_starts
    rows = np.flatnonzero(lengths)  # 0-based numbers of the lines that hold values
    if rows.size == 0:
        raise ValueError(f"{path}: no rows, expected lines of space-separated 0 and 1")
    ragged = rows[lengths[rows] != lengths[rows[0]]]
    if ragged.size:
        first, line = rows[0], ragged[0]
        raise ValueError(
            f"{path}: line {line + 1}: {lengths[line]} values, expected {lengths[first]} as on line {first + 1}"
        )
    return torch.from_numpy((chars[~space] - ord("0")).reshape(rows.size, int(lengths[rows[0]])))


def read_mat(path: str | os.PathLike, key: str = "X") -> Tensor:
    """Read one integer matrix of a MATLAB (v4 to v7.2) ``.mat`` file with :func:`scipy.io.loadmat`.

    Args:
        path: The file.
        key: Name of the variable.

    Returns:
        The variable as ``uint8``, with MATLAB's shape.

    Raises:
        ValueError: The file is not one that :func:`scipy.io.loadmat` reads, the variable is missing (the
            message lists those found), or its values are not whole numbers in 0..255.
    """
    try:
        contents = scipy.io.loadmat(path)
    except (ValueError, NotImplementedError, TypeError, scipy.io.matlab.MatReadError) as error:
        raise ValueError(f"{path}: not a MATLAB .mat file readable by scipy.io.loadmat ({error})") from error
    if key not in contents:
        found = sorted(name for name in contents if not name.startswith("__"))
        raise ValueError(f"{path}: no variable {key!r}; variables found: {found}")
    array = contents[key]
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise ValueError(f"{path}: variable {key!r} has dtype {array.dtype}, expected numbers")
    if array.size and (array.min() < 0 or array.max() > 255 or not np.array_equal(array, np.round(array))):
        raise ValueError(
            f"{path}: variable {key!r} holds values in [{array.min()}, {array.max()}], expected whole numbers in 0..255"
        )
    return torch.from_numpy(array.astype(np.uint8))


def read_omniglot_npz(path: str | os.PathLike) -> Tensor:
    """Read one half of Omniglot (background or evaluation set) from a NumPy ``.npz`` archive.

    The archive (bitsandscraps/omniglot, built from brendenlake/omniglot) holds ``images``, bool
    ``(characters, 20, 105, 105)`` where ``images[c, s]`` is drawer ``s + 1``'s drawing of character ``c``
    and ``True`` is white background, as in the original 1-bit PNGs of Lake et al. (2015).

    Args:
        path: The file.

    Returns:
        ``uint8`` ink ``(characters, 20, 105, 105)``: 1 where the stroke is, 0 on the background.

    Raises:
        ValueError: The file is not an ``.npz`` archive without pickles, has no ``images`` (the message
            lists the arrays found), or ``images`` has another dtype or shape.
    """
    try:
        archive = np.load(path)
    except FileNotFoundError:
        raise
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as error:
        raise ValueError(f"{path}: not a NumPy .npz archive without pickles ({error})") from error
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{path}: a single .npy array, expected an .npz archive with an array 'images'")
    with archive:
        if "images" not in archive.files:
            raise ValueError(f"{path}: no array 'images'; arrays found: {sorted(archive.files)}")
        try:
            images = archive["images"]
        except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error) as error:
            raise ValueError(f"{path}: cannot read the array 'images' ({error})") from error
    expected = f"bool (characters, {OMNIGLOT_DRAWERS}, {OMNIGLOT_SIDE}, {OMNIGLOT_SIDE})"
    if images.dtype != bool or images.ndim != 4 or images.shape[1:] != (OMNIGLOT_DRAWERS, OMNIGLOT_SIDE, OMNIGLOT_SIDE):
        raise ValueError(f"{path}: 'images' is {images.dtype} {images.shape}, expected {expected}")
    return torch.from_numpy(np.logical_not(images).view(np.uint8))
