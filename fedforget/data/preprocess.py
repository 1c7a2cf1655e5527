"""Shared preprocessing helpers: the canonical seeded split, standardisation, safe file reading.

The canonical train/test split for datasets without an official one (location, digits,
breast-cancer, csv/npz files without a split) is :func:`stratified_split` with
:data:`SPLIT_SEED`: for each class (in ascending label order) a ``numpy.random.RandomState(SPLIT_SEED)``
permutation of that class's row indices puts the first ``round(0.2 * n_class)`` rows (rounding
halves up) into test; both splits are then sorted back into the original row order. ``RandomState``
is used, not ``default_rng``, because NumPy guarantees its stream never changes, so the global ids
it defines are stable across NumPy versions.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import zlib
from pathlib import Path

import numpy as np

from fedforget.data.base import DataError

SPLIT_SEED = 20240229
TEST_FRACTION = 0.2


def stratified_split(
    y: np.ndarray, seed: int = SPLIT_SEED, test_fraction: float = TEST_FRACTION
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(train_idx, test_idx)``, each sorted ascending (see the module docstring)."""
    y = np.asarray(y)
    rng = np.random.RandomState(seed)
    test_parts = []
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        n_test = math.floor(test_fraction * len(members) + 0.5)
        test_parts.append(rng.permutation(members)[:n_test])
    test_idx = np.sort(np.concatenate(test_parts)) if test_parts else np.zeros(0, dtype=np.int64)
    is_test = np.zeros(len(y), dtype=bool)
    is_test[test_idx] = True
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


def standardise(
    x_train: np.ndarray, x_test: np.ndarray, columns: np.ndarray | slice | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Standardise ``columns`` (all by default) with the train mean and (population) std.

    Constant columns get std 1 so they become 0 rather than NaN. Returns float32 copies.
    """
    x_train = np.array(x_train, dtype=np.float64)
    x_test = np.array(x_test, dtype=np.float64)
    cols = slice(None) if columns is None else columns
    if len(x_train):
        mean = x_train[:, cols].mean(axis=0)
        std = x_train[:, cols].std(axis=0)
        std[std == 0] = 1.0
        x_train[:, cols] = (x_train[:, cols] - mean) / std
        x_test[:, cols] = (x_test[:, cols] - mean) / std
    return x_train.astype(np.float32), x_test.astype(np.float32)


HEAVY_TAIL_Z = 10.0
"""A column is heavy-tailed when a train value lies more than this many standard deviations from the
train mean (a Gaussian column of 10 million rows stays within about 5.5)."""


def scale_features(x_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Scale the columns of a user's table: standardised, or robust-scaled where heavy-tailed.

    Each column is standardised with the train mean and std (:func:`standardise`), unless it is
    heavy-tailed (a standardised train value beyond :data:`HEAVY_TAIL_Z`): then one outlier inflates
    the std, the bulk of the column collapses to about 0 and the outliers become inputs of size
    10-1000 that make SGD diverge. Such a column is scaled robustly instead::

        z = asinh((x - median) / s),   s = IQR / 1.349  (else 1.4826 MAD, else std, else 1)

    with the train median, interquartile range and median absolute deviation: the bulk keeps its
    spread (``asinh z ~ z`` for small ``z``), the order of values is kept, and a value 10^4 spreads
    away becomes about 10. Returns float32 copies and the indices of the robust-scaled columns.
    """
    x_train = np.array(x_train, dtype=np.float64)
    x_test = np.array(x_test, dtype=np.float64)
    if not len(x_train):
        return x_train.astype(np.float32), x_test.astype(np.float32), []
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    std_safe = np.where(std == 0, 1.0, std)
    heavy = np.abs((x_train - mean) / std_safe).max(axis=0) > HEAVY_TAIL_Z
    out_train, out_test = (x_train - mean) / std_safe, (x_test - mean) / std_safe
    for j in np.flatnonzero(heavy):
        column = x_train[:, j]
        median = np.median(column)
        q25, q75 = np.percentile(column, [25, 75])
        mad = np.median(np.abs(column - median))
        scale = next((s for s in ((q75 - q25) / 1.349, 1.4826 * mad, std[j]) if s > 0), 1.0)
        out_train[:, j] = np.arcsinh((column - median) / scale)
        out_test[:, j] = np.arcsinh((x_test[:, j] - median) / scale)
    return out_train.astype(np.float32), out_test.astype(np.float32), np.flatnonzero(heavy).tolist()


def normalise_images(images: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """uint8 ``N x C x H x W`` -> float32 ``(x / 255 - mean[c]) / std[c]`` per channel."""
    out = images.astype(np.float32)
    out /= 255.0
    m = np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1)
    out -= m
    out /= s
    return out


def read_bytes(path: Path) -> bytes:
    """Read a file, transparently gunzipping ``*.gz``; a truncated or corrupt file is a DataError."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                return fh.read()
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"Missing dataset file {path}") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"Cannot read {path}: {exc} (the file is corrupt or truncated; re-fetch it)") from exc


def md5_file(path: Path, chunk: int = 1 << 20) -> str:
    """The hex md5 of a file's bytes."""
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def first_existing(folder: Path, names: tuple[str, ...]) -> Path:
    """The first of ``folder/name`` that exists, else a DataError listing what was looked for."""
    for name in names:
        if (folder / name).is_file():
            return folder / name
    raise DataError(f"None of {', '.join(names)} found in {folder}")


def freeze(*arrays: np.ndarray) -> None:
    """Make arrays read-only so the in-process cache cannot be corrupted by a caller."""
    for array in arrays:
        array.flags.writeable = False
