"""Tabular datasets read from their original files: UCI Adult, Location (Shokri et al.), UCI Letter.

Canonical orders and preprocessing (global id ``i`` = ``x_train[i]``):

* **adult** (``adult/adult.data``, ``adult/adult.test``): train = the 32,561 records of
  ``adult.data`` in file order (blank lines ignored); test = the 16,281 records of ``adult.test``
  (its first line, a header, is skipped; its labels end in ``.``). Label ``>50K`` = 1, ``<=50K`` = 0.
  Features, in the original column order: each of the 6 continuous columns standardised with the
  train mean/std, each of the 8 categorical columns one-hot over the sorted category list fixed in
  :data:`ADULT_CATEGORIES` (the values of ``adult.names`` plus ``?`` where values are missing: exactly
  the values occurring in train + test, so both splits have the same 108 columns). ``?`` is kept as
  its own category. A value outside the list is a :class:`DataError` (not the UCI file).
* **location** (``location/dataset_location.tgz``, read directly with :mod:`tarfile`; its one CSV
  member has a quoted label ``"1"`` … ``"30"`` then 446 0/1 features): labels become 0..29, features
  float32 kept 0/1. No official split: the canonical split is
  :func:`fedforget.data.preprocess.stratified_split` (seeded, stratified 80/20), each split in
  original file order: 4,007 train + 1,003 test.
* **letter** (``letter/letter-recognition.csv.gz``, header row, first column ``lettr``): train = the
  first 16,000 rows, test = the last 4,000 (UCI's recommended split); ``A``..``Z`` -> 0..25; the 16
  integer features standardised with the train mean/std.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np

from fedforget.data.base import DataError, Dataset, DatasetInfo
from fedforget.data.preprocess import freeze, read_bytes, standardise, stratified_split

# ------------------------------------------------------------------------------------------------ adult
ADULT_COLUMNS = (
    "age",
    "workclass",
    "fnlwgt",
    "education",
    "education-num",
    "marital-status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "capital-gain",
    "capital-loss",
    "hours-per-week",
    "native-country",
)
ADULT_CATEGORIES: dict[str, tuple[str, ...]] = {
    "workclass": (
        "?",
        "Federal-gov",
        "Local-gov",
        "Never-worked",
        "Private",
        "Self-emp-inc",
        "Self-emp-not-inc",
        "State-gov",
        "Without-pay",
    ),
    "education": (
        "10th",
        "11th",
        "12th",
        "1st-4th",
        "5th-6th",
        "7th-8th",
        "9th",
        "Assoc-acdm",
        "Assoc-voc",
        "Bachelors",
        "Doctorate",
        "HS-grad",
        "Masters",
        "Preschool",
        "Prof-school",
        "Some-college",
    ),
    "marital-status": (
        "Divorced",
        "Married-AF-spouse",
        "Married-civ-spouse",
        "Married-spouse-absent",
        "Never-married",
        "Separated",
        "Widowed",
    ),
    "occupation": (
        "?",
        "Adm-clerical",
        "Armed-Forces",
        "Craft-repair",
        "Exec-managerial",
        "Farming-fishing",
        "Handlers-cleaners",
        "Machine-op-inspct",
        "Other-service",
        "Priv-house-serv",
        "Prof-specialty",
        "Protective-serv",
        "Sales",
        "Tech-support",
        "Transport-moving",
    ),
    "relationship": (
        "Husband",
        "Not-in-family",
        "Other-relative",
        "Own-child",
        "Unmarried",
        "Wife",
    ),
    "race": (
        "Amer-Indian-Eskimo",
        "Asian-Pac-Islander",
        "Black",
        "Other",
        "White",
    ),
    "sex": (
        "Female",
        "Male",
    ),
    "native-country": (
        "?",
        "Cambodia",
        "Canada",
        "China",
        "Columbia",
        "Cuba",
        "Dominican-Republic",
        "Ecuador",
        "El-Salvador",
        "England",
        "France",
        "Germany",
        "Greece",
        "Guatemala",
        "Haiti",
        "Holand-Netherlands",
        "Honduras",
        "Hong",
        "Hungary",
        "India",
        "Iran",
        "Ireland",
        "Italy",
        "Jamaica",
        "Japan",
        "Laos",
        "Mexico",
        "Nicaragua",
        "Outlying-US(Guam-USVI-etc)",
        "Peru",
        "Philippines",
        "Poland",
        "Portugal",
        "Puerto-Rico",
        "Scotland",
        "South",
        "Taiwan",
        "Thailand",
        "Trinadad&Tobago",
        "United-States",
        "Vietnam",
        "Yugoslavia",
    ),
}
ADULT_WIDTH = len(ADULT_COLUMNS) - len(ADULT_CATEGORIES) + sum(map(len, ADULT_CATEGORIES.values()))

ADULT_INFO = DatasetInfo("adult", (ADULT_WIDTH,), 2, "tabular")
LOCATION_INFO = DatasetInfo("location", (446,), 30, "tabular")
LETTER_INFO = DatasetInfo("letter", (16,), 26, "tabular")


def adult_feature_names() -> list[str]:
    """The name of every output column, e.g. ``age``, ``workclass=?``, ``workclass=Federal-gov``."""
    names = []
    for column in ADULT_COLUMNS:
        cats = ADULT_CATEGORIES.get(column)
        names.extend([column] if cats is None else [f"{column}={c}" for c in cats])
    return names


def _parse_adult(path: Path, skip_header: bool) -> tuple[np.ndarray, np.ndarray]:
    lines = read_bytes(path).decode("utf-8").splitlines()
    start = 1 if skip_header else 0
    index = {col: {cat: j for j, cat in enumerate(cats)} for col, cats in ADULT_CATEGORIES.items()}
    offsets, pos = [], 0
    for column in ADULT_COLUMNS:
        offsets.append(pos)
        pos += len(ADULT_CATEGORIES.get(column, (column,)))
    rows = [(n, line) for n, line in enumerate(lines[start:], start + 1) if line.strip()]
    x = np.zeros((len(rows), ADULT_WIDTH), dtype=np.float64)
    y = np.zeros(len(rows), dtype=np.int64)
    for r, (lineno, line) in enumerate(rows):
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != len(ADULT_COLUMNS) + 1:
            raise DataError(f"{path}:{lineno}: expected 15 comma-separated fields, found {len(fields)}")
        for column, value, offset in zip(ADULT_COLUMNS, fields, offsets, strict=False):
            if column in index:
                j = index[column].get(value)
                if j is None:
                    raise DataError(f"{path}:{lineno}: unknown {column} value {value!r}")
                x[r, offset + j] = 1.0
            else:
                try:
                    x[r, offset] = float(value)
                except ValueError:
                    raise DataError(f"{path}:{lineno}: {column} value {value!r} is not a number") from None
        label = fields[-1].rstrip(".")
        if label not in ("<=50K", ">50K"):
            raise DataError(f"{path}:{lineno}: label {fields[-1]!r} is neither <=50K nor >50K")
        y[r] = label == ">50K"
    return x, y


def load_adult(root: Path) -> Dataset:
    """UCI Adult: 32,561 train + 16,281 test records, 108 features, 2 classes."""
    x_train, y_train = _parse_adult(root / "adult" / "adult.data", skip_header=False)
    x_test, y_test = _parse_adult(root / "adult" / "adult.test", skip_header=True)
    continuous = np.array([n in ADULT_COLUMNS for n in adult_feature_names()])
    x_train, x_test = standardise(x_train, x_test, continuous)
    freeze(x_train, y_train, x_test, y_test)
    return Dataset(ADULT_INFO, x_train, y_train, x_test, y_test)


# --------------------------------------------------------------------------------------------- location
def _read_location_csv(path: Path) -> bytes:
    try:
        with tarfile.open(path, "r:*") as archive:
            members = [m for m in archive.getmembers() if m.isfile()]
            if len(members) != 1:
                raise DataError(f"{path}: expected exactly one file inside, found {len(members)}")
            handle = archive.extractfile(members[0])
            assert handle is not None
            return handle.read()
    except FileNotFoundError:
        raise DataError(f"Missing dataset file {path}") from None
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"Cannot read {path}: {exc} (the file is corrupt or truncated; re-fetch it)") from exc


def load_location(root: Path) -> Dataset:
    """Location (Bangkok check-ins): 5,010 records, 446 binary features, 30 classes, seeded 80/20."""
    path = root / "location" / "dataset_location.tgz"
    text = _read_location_csv(path).decode("ascii").replace('"', "")
    try:
        table = np.loadtxt(io.StringIO(text), delimiter=",", dtype=np.int64, ndmin=2)
    except ValueError as exc:
        raise DataError(f"{path}: the CSV inside is not all integers: {exc}") from None
    if table.shape[1] != 447:
        raise DataError(f"{path}: expected 447 columns (label + 446 features), found {table.shape[1]}")
    y, x = table[:, 0] - 1, table[:, 1:].astype(np.float32)
    if y.min() < 0 or y.max() >= 30 or not np.isin(x, (0, 1)).all():
        raise DataError(f"{path}: labels must be 1..30 and features 0/1")
    train, test = stratified_split(y)
    parts = (x[train], y[train], x[test], y[test])
    freeze(*parts)
    return Dataset(LOCATION_INFO, *parts)


# ----------------------------------------------------------------------------------------------- letter
LETTER_TRAIN = 16000


def load_letter(root: Path) -> Dataset:
    """UCI Letter: first 16,000 rows train, last 4,000 test, 16 standardised features, 26 classes."""
    path = root / "letter" / "letter-recognition.csv.gz"
    lines = read_bytes(path).decode("ascii").splitlines()
    rows = [line.split(",") for line in lines[1:] if line.strip()]
    if not rows or lines[0].split(",")[0].strip('"') != "lettr" or any(len(r) != 17 for r in rows):
        raise DataError(f"{path}: expected a header starting with 'lettr' and rows of 17 fields")
    letters = [r[0].strip('"') for r in rows]
    if any(len(c) != 1 or not "A" <= c <= "Z" for c in letters):
        raise DataError(f"{path}: the first column must be a letter A..Z")
    y = np.array([ord(c) - ord("A") for c in letters], dtype=np.int64)
    try:
        x = np.array([r[1:] for r in rows], dtype=np.float64)
    except ValueError as exc:
        raise DataError(f"{path}: non-numeric feature: {exc}") from None
    x_train, x_test = standardise(x[:LETTER_TRAIN], x[LETTER_TRAIN:])
    y_train, y_test = y[:LETTER_TRAIN].copy(), y[LETTER_TRAIN:].copy()
    freeze(x_train, y_train, x_test, y_test)
    return Dataset(LETTER_INFO, x_train, y_train, x_test, y_test)
