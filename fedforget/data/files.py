"""User files: ``csv:PATH`` and ``npz:PATH`` (a relative PATH is taken from the current directory).

**csv** (or gzip-compressed ``.csv.gz``) -- a header row, then one sample per row. The label column
is the first of ``label``, ``y``, ``target``, ``class`` (case-insensitive) present, else the last
column. An optional column ``split`` holding ``train``/``test`` fixes the split; otherwise the
canonical split is :func:`fedforget.data.preprocess.stratified_split` (seeded, stratified 80/20).
Every other column is a feature and must be numeric and finite (otherwise a :class:`DataError`
names the column and row).
Labels, numeric or not, are mapped to ``0..K-1`` by sorted order of their distinct values (numeric
order when all parse as numbers); a file with a single class is a :class:`DataError`. Features are
scaled by :func:`fedforget.data.preprocess.scale_features`: standardised with the train mean/std, or,
for a heavy-tailed column (a train value more than 10 std from the mean), ``asinh`` of the value
robust-scaled by the train median and interquartile range. Canonical order: file order within each
split.

**npz** -- arrays ``x_train, y_train, x_test, y_test``, or ``x, y`` (then the seeded stratified 80/20
split, file order within each split). Labels are mapped to ``0..K-1`` by sorted distinct value.
2-D ``x`` is tabular, scaled as a csv file's features. 3-D ``(N, H, W)`` and 4-D ``x`` are images
made ``N x C x H x W`` (4-D is read as ``N x H x W x C`` when its last axis has 1, 3 or 4 entries and
its second does not, else as ``N x C x H x W``); uint8 images are scaled to [0, 1], other dtypes are
kept as float32 values.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import zipfile
import zlib
from pathlib import Path

import numpy as np

from fedforget.data.base import DataError, Dataset, DatasetInfo
from fedforget.data.preprocess import freeze, scale_features, stratified_split

LABEL_COLUMNS = ("label", "y", "target", "class")
SPLIT_COLUMN = "split"


def _label_codes(values: np.ndarray) -> np.ndarray:
    """Map labels to 0..K-1 by sorted distinct value (numeric order if they are all numbers)."""
    if values.dtype.kind in "US":
        with contextlib.suppress(ValueError):
            values = values.astype(np.float64)
    _, codes = np.unique(values, return_inverse=True)
    return codes.reshape(-1).astype(np.int64)


def _label_values(values: np.ndarray) -> tuple[str | float, ...]:
    """The raw label each code of :func:`_label_codes` stands for (``result[code]``)."""
    if values.dtype.kind in "US":
        with contextlib.suppress(ValueError):
            values = values.astype(np.float64)
    return tuple(v.item() for v in np.unique(values.reshape(-1)))


# ------------------------------------------------------------------------------------------------- csv
def load_csv(path: Path, name: str) -> Dataset:
    """A labelled table from a CSV file (see the module docstring)."""
    try:
        opener = gzip.open if path.name.lower().endswith(".gz") else open
        with opener(path, "rt", newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            rows = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    except (OSError, EOFError, zlib.error, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"Cannot read {path}: {exc}") from exc
    if not rows:
        raise DataError(f"{path} is empty: expected a header row and at least one data row")
    header = [h.strip() for h in rows[0][1]]
    line = np.array([n for n, _ in rows[1:]])  # file line number of each data row, for messages
    body = [row for _, row in rows[1:]]
    if not body:
        raise DataError(f"{path} has a header but no data rows")
    for lineno, row in rows[1:]:
        if len(row) != len(header):
            raise DataError(f"{path}: line {lineno} has {len(row)} fields, the header has {len(header)}")
    lower = [h.lower() for h in header]
    label_col = next((lower.index(n) for n in LABEL_COLUMNS if n in lower), len(header) - 1)
    split_col = lower.index(SPLIT_COLUMN) if SPLIT_COLUMN in lower else None
    if split_col == label_col:
        split_col = None
    feature_cols = [j for j in range(len(header)) if j not in (label_col, split_col)]
    if not feature_cols:
        raise DataError(f"{path}: no feature columns besides the label column '{header[label_col]}'")
    cells = np.array(body, dtype=str)
    labels = np.char.strip(cells[:, label_col])
    if (labels == "").any():
        lineno = line[np.argmax(labels == "")]
        raise DataError(f"{path}: empty label in column '{header[label_col]}' (line {lineno})")
    y = _label_codes(labels)
    _require_two_classes(path, y, f"the label column '{header[label_col]}'")
    x = np.empty((len(body), len(feature_cols)), dtype=np.float64)
    for k, j in enumerate(feature_cols):
        column = np.char.strip(cells[:, j])
        try:
            x[:, k] = column.astype(np.float64)
            bad = np.flatnonzero(~np.isfinite(x[:, k]))
        except ValueError:
            bad = np.flatnonzero([not _is_number(v) for v in column])
        if len(bad):
            raise DataError(
                f"{path}: column '{header[j]}' must be numeric (features must be finite numbers); "
                f"line {line[bad[0]]} holds {str(column[bad[0]])!r}"
            )
    if split_col is not None:
        split = np.char.lower(np.char.strip(cells[:, split_col]))
        wrong = np.flatnonzero(~np.isin(split, ("train", "test")))
        if len(wrong):
            raise DataError(
                f"{path}: column '{header[split_col]}' must hold train or test; line {line[wrong[0]]} holds "
                f"{str(cells[wrong[0], split_col])!r}"
            )
        train, test = np.flatnonzero(split == "train"), np.flatnonzero(split == "test")
    else:
        train, test = stratified_split(y)
    if not len(train):
        raise DataError(f"{path}: no training rows")
    x_train, x_test, _ = scale_features(x[train], x[test])
    info = DatasetInfo(name, (len(feature_cols),), int(y.max()) + 1, "tabular")
    parts = (x_train, y[train], x_test, y[test])
    freeze(*parts)
    return Dataset(info, *parts, classes=_label_values(labels))


def _require_two_classes(path: Path, codes: np.ndarray, where: str) -> None:
    """A classifier needs at least two classes: a one-class file is a DataError (not a silent run)."""
    if len(codes) and int(codes.max()) == 0:
        raise DataError(
            f"{path}: {where} holds a single class; a classifier needs at least 2 (is the label column "
            "the right one? name it 'label', or put it last)"
        )


def _is_number(value: str) -> bool:
    try:
        return bool(np.isfinite(float(value)))
    except ValueError:
        return False


# ------------------------------------------------------------------------------------------------- npz
def load_npz(path: Path, name: str) -> Dataset:
    """Arrays from an ``.npz`` file (see the module docstring)."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"Cannot read {path}: {exc} (expected an .npz file without pickled objects)") from exc
    if {"x_train", "y_train", "x_test", "y_test"} <= arrays.keys():
        x_train, x_test = arrays["x_train"], arrays["x_test"]
        n_train = len(arrays["y_train"])
        raw = np.concatenate([arrays["y_train"].reshape(-1), arrays["y_test"].reshape(-1)])
        y = _label_codes(raw)
        y_train, y_test = y[:n_train], y[n_train:]
    elif {"x", "y"} <= arrays.keys():
        raw = arrays["y"].reshape(-1)
        y = _label_codes(raw)
        if len(arrays["x"]) != len(y):
            raise DataError(f"{path}: x has {len(arrays['x'])} samples but y has {len(y)}")
        train, test = stratified_split(y)
        x_train, x_test, y_train, y_test = arrays["x"][train], arrays["x"][test], y[train], y[test]
    else:
        raise DataError(f"{path} holds {sorted(arrays)}; expected x_train, y_train, x_test, y_test or x, y")
    for split, x in (("x_train", x_train), ("x_test", x_test)):
        if x.dtype.kind not in "biuf" or x.ndim not in (2, 3, 4):
            raise DataError(f"{path}: {split} must be numeric and 2-D, 3-D or 4-D, not {x.dtype} {x.shape}")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(f"{path}: x_train samples {x_train.shape[1:]} differ from x_test {x_test.shape[1:]}")
    _require_two_classes(path, y, "y")
    if x_train.ndim == 2:
        x_train, x_test, _ = scale_features(x_train, x_test)
        kind = "tabular"
    else:
        x_train, x_test = _to_nchw(x_train), _to_nchw(x_test)
        kind = "image"
    info = DatasetInfo(name, tuple(int(d) for d in x_train.shape[1:]), int(y.max()) + 1, kind)
    parts = (x_train, np.ascontiguousarray(y_train), x_test, np.ascontiguousarray(y_test))
    freeze(*parts)
    return Dataset(info, *parts, classes=_label_values(raw))


def _to_nchw(x: np.ndarray) -> np.ndarray:
    scaled = x.dtype == np.uint8
    if x.ndim == 3:
        x = x[:, None]
    elif x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
        x = x.transpose(0, 3, 1, 2)
    out = np.ascontiguousarray(x, dtype=np.float32)
    if scaled:
        out /= 255.0
    return out
