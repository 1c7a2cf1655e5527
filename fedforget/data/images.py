"""Image datasets: MNIST, Fashion-MNIST, CIFAR-10.

Preprocessing: pixels become float32 ``N x C x H x W`` with ``(x / 255 - mean[c]) / std[c]`` per
channel (MNIST 0.1307/0.3081, Fashion-MNIST 0.2860/0.3530, CIFAR-10 the standard
(0.4914, 0.4822, 0.4465)/(0.2470, 0.2435, 0.2616)); labels int64.

Canonical order (global id ``i`` = ``x_train[i]``):

* ``mnist/``, ``fashion-mnist/``: the record order of the standard IDX files (60,000 train from
  ``train-images[-.]idx3-ubyte[.gz]``, 10,000 test from ``t10k-…``); both the ``-idx3`` and the
  ``.idx3`` spelling, gzipped or not, are read.
* ``cifar10/cifar-10-batches-py/`` (torchvision's lossless python pickle format, preferred when
  present): ``data_batch_1`` … ``data_batch_5`` concatenated in that order; test = ``test_batch``.
  These are Python pickles: only point ``data-dir`` at files you trust (e.g. your own download).
* ``cifar10-jpeg/*.npz`` (the offline JPEG q75 copy): the npz's own order (``train_offsets``); this
  is *not* the original CIFAR-10 order, so global ids differ between the two sources (pixel values
  may also differ by a grey level between JPEG decoder builds). Decoding the
  60,000 JPEGs takes seconds, so the decoded uint8 arrays are cached as ``.npy`` files under
  ``$FEDFORGET_CACHE`` (default ``~/.cache/fedforget``), keyed by the npz's md5 and written atomically.
"""

from __future__ import annotations

import io
import os
import pickle
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np

from fedforget.data.base import DataError, Dataset, DatasetInfo
from fedforget.data.paths import cache_dir
from fedforget.data.preprocess import first_existing, freeze, md5_file, normalise_images, read_bytes

MNIST_INFO = DatasetInfo("mnist", (1, 28, 28), 10, "image")
FASHION_INFO = DatasetInfo("fashion-mnist", (1, 28, 28), 10, "image")
CIFAR10_INFO = DatasetInfo("cifar10", (3, 32, 32), 10, "image")

MNIST_STATS = ((0.1307,), (0.3081,))
FASHION_STATS = ((0.2860,), (0.3530,))
CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))

CIFAR10_LOSSLESS_DIR = "cifar10/cifar-10-batches-py"
CIFAR10_JPEG = "cifar10-jpeg"
CIFAR10_JPEG_FILE = "cifar10_jpeg_q75.npz"


# ---------------------------------------------------------------------------------------- IDX (MNIST)
def read_idx(path: Path, expected_ndim: int) -> np.ndarray:
    """Parse an IDX file of unsigned bytes (magic ``0x0000 08 ndim``, big-endian int32 dims)."""
    raw = read_bytes(path)
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08" or raw[3] != expected_ndim:
        raise DataError(f"{path} is not an IDX file of {expected_ndim}-D unsigned bytes (bad magic number)")
    header = 4 + 4 * expected_ndim
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">i4", count=expected_ndim, offset=4))
    size = int(np.prod(dims))
    if len(raw) != header + size:
        raise DataError(f"{path}: header says {dims} = {size} bytes of data, file holds {len(raw) - header}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _idx_file(folder: Path, prefix: str, kind: str) -> Path:
    ndim = 3 if kind == "images" else 1
    stems = (f"{prefix}-{kind}-idx{ndim}-ubyte", f"{prefix}-{kind}.idx{ndim}-ubyte")
    return first_existing(folder, tuple(f"{s}{ext}" for s in stems for ext in (".gz", "")))


def _load_idx_dataset(root: Path, folder: str, info: DatasetInfo, stats: tuple) -> Dataset:
    base = root / folder
    splits = []
    for prefix in ("train", "t10k"):
        images = read_idx(_idx_file(base, prefix, "images"), 3)
        labels = read_idx(_idx_file(base, prefix, "labels"), 1)
        splits.append((normalise_images(images[:, None], *stats), labels.astype(np.int64)))
    (x_train, y_train), (x_test, y_test) = splits
    freeze(x_train, y_train, x_test, y_test)
    return Dataset(info, x_train, y_train, x_test, y_test)


def load_mnist(root: Path) -> Dataset:
    """MNIST from ``root/mnist/`` (60,000 + 10,000, 1 x 28 x 28)."""
    return _load_idx_dataset(root, "mnist", MNIST_INFO, MNIST_STATS)


def load_fashion_mnist(root: Path) -> Dataset:
    """Fashion-MNIST from ``root/fashion-mnist/`` (60,000 + 10,000, 1 x 28 x 28)."""
    return _load_idx_dataset(root, "fashion-mnist", FASHION_INFO, FASHION_STATS)


# ---------------------------------------------------------------------------------------- CIFAR-10
def load_cifar10(root: Path) -> Dataset:
    """CIFAR-10 (50,000 + 10,000, 3 x 32 x 32) from the lossless pickles, else the JPEG npz."""
    lossless = root / CIFAR10_LOSSLESS_DIR
    if lossless.is_dir():
        (x_train, y_train), (x_test, y_test) = read_cifar_pickles(lossless)
    else:
        (x_train, y_train), (x_test, y_test) = read_cifar_jpeg_npz(_jpeg_npz(root / CIFAR10_JPEG))
    x_train = normalise_images(x_train, *CIFAR10_STATS)
    x_test = normalise_images(x_test, *CIFAR10_STATS)
    freeze(x_train, y_train, x_test, y_test)
    return Dataset(CIFAR10_INFO, x_train, y_train, x_test, y_test)


def _jpeg_npz(folder: Path) -> Path:
    if (folder / CIFAR10_JPEG_FILE).is_file():
        return folder / CIFAR10_JPEG_FILE
    found = sorted(folder.glob("*.npz"))
    if len(found) != 1:
        raise DataError(f"Expected {CIFAR10_JPEG_FILE} (or exactly one .npz) in {folder}, found {len(found)}")
    return found[0]


Split = tuple[np.ndarray, np.ndarray]


def read_cifar_pickles(folder: Path) -> tuple[Split, Split]:
    """uint8 ``N x 3 x 32 x 32`` images and int64 labels from torchvision's ``cifar-10-batches-py``."""

    def batch(name: str) -> Split:
        path = folder / name
        try:
            with open(path, "rb") as fh:
                entry = pickle.load(fh, encoding="bytes")
            data = np.asarray(entry[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            labels = np.asarray(entry[b"labels"], dtype=np.int64)
        except FileNotFoundError:
            raise DataError(f"CIFAR-10 batch file {path} is missing") from None
        except Exception as exc:  # noqa: BLE001 - any unpickling failure means a corrupt file
            raise DataError(f"Cannot read CIFAR-10 batch {path}: {exc!r} (corrupt file?)") from exc
        return data, labels

    train = [batch(f"data_batch_{i}") for i in range(1, 6)]
    x_train = np.concatenate([b[0] for b in train])
    y_train = np.concatenate([b[1] for b in train])
    return (x_train, y_train), batch("test_batch")


def read_cifar_jpeg_npz(path: Path) -> tuple[Split, Split]:
    """Decoded uint8 ``N x 3 x 32 x 32`` images (cached) and int64 labels from the JPEG npz."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            parts = {k: archive[k] for k in ("train_jpeg", "train_offsets", "y_train", "test_jpeg")}
            parts.update({k: archive[k] for k in ("test_offsets", "y_test")})
    except KeyError as exc:
        raise DataError(f"{path} lacks the array {exc} (see the README of the dataset folder)") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"Cannot read {path}: {exc} (the file is corrupt or truncated; re-fetch it)") from exc
    key = md5_file(path)
    out = []
    for split in ("train", "test"):
        blob, offsets = parts[f"{split}_jpeg"], parts[f"{split}_offsets"]
        labels = parts[f"y_{split}"].astype(np.int64)
        if len(offsets) != len(labels) + 1 or offsets[-1] != len(blob):
            raise DataError(f"{path}: {split}_offsets does not match {split}_jpeg / y_{split}")
        cached = cache_dir() / f"cifar10-jpeg-{key}-{split}.npy"
        images = _read_cache(cached, len(labels))
        if images is None:
            images = decode_jpegs(blob, offsets, path)
            _write_cache(cached, images)
        out.append((images, labels))
    return out[0], out[1]


def decode_jpegs(blob: np.ndarray, offsets: np.ndarray, source: Path | str = "") -> np.ndarray:
    """Decode concatenated 32x32 RGB JPEGs (image ``i`` = ``blob[offsets[i]:offsets[i+1]]``) to NCHW.

    Single-threaded on purpose: Pillow holds the GIL for images this small (threads measured no
    faster), and the result is cached on disk anyway.
    """
    from PIL import Image

    n = len(offsets) - 1
    images = np.empty((n, 32, 32, 3), dtype=np.uint8)
    data = blob.tobytes()
    for i in range(n):
        try:
            with Image.open(io.BytesIO(data[offsets[i] : offsets[i + 1]])) as image:
                images[i] = np.asarray(image.convert("RGB"))
        except Exception as exc:  # noqa: BLE001 - Pillow raises many types for bad data
            raise DataError(f"{source}: cannot decode JPEG image {i}: {exc!r}") from exc
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2))


def _read_cache(path: Path, n: int) -> np.ndarray | None:
    if not path.is_file():
        return None
    try:
        images = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    ok = images.dtype == np.uint8 and images.shape == (n, 3, 32, 32)
    return images if ok else None


def _write_cache(path: Path, images: np.ndarray) -> None:
    """Write atomically (temp file + rename); an unwritable cache only costs a warning."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            dir=path.parent, prefix=path.name, suffix=".tmp", delete=False
        ) as fh:
            tmp = fh.name
            np.save(fh, images)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        warnings.warn(f"Could not cache decoded images at {path}: {exc}", stacklevel=3)
