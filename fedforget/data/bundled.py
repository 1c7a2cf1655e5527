"""Small datasets shipped inside scikit-learn's wheel (no data folder needed).

* **digits** (``sklearn.datasets.load_digits``): 1,797 8x8 grey digits flattened to 64 features,
  divided by 16 (so in [0, 1]), float32; 10 classes.
* **breast-cancer** (``sklearn.datasets.load_breast_cancer``): 569 x 30 features standardised with
  the train mean/std; 2 classes (sklearn's labels: 0 = malignant, 1 = benign).

Canonical order: sklearn's row order, split by :func:`fedforget.data.preprocess.stratified_split`
(seeded, stratified 80/20), each split kept in that original order. digits: 1,438 train + 359 test;
breast-cancer: 456 train + 113 test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedforget.data.base import Dataset, DatasetInfo
from fedforget.data.preprocess import freeze, standardise, stratified_split

DIGITS_INFO = DatasetInfo("digits", (64,), 10, "tabular")
BREAST_CANCER_INFO = DatasetInfo("breast-cancer", (30,), 2, "tabular")


def load_digits(root: Path | None = None) -> Dataset:
    """scikit-learn digits, features / 16 (``root`` is ignored)."""
    from sklearn.datasets import load_digits as sk_load

    bunch = sk_load()
    x = (bunch.data / 16.0).astype(np.float32)
    y = bunch.target.astype(np.int64)
    train, test = stratified_split(y)
    parts = (x[train], y[train], x[test], y[test])
    freeze(*parts)
    return Dataset(DIGITS_INFO, *parts)


def load_breast_cancer(root: Path | None = None) -> Dataset:
    """scikit-learn breast cancer (Wisconsin diagnostic), standardised (``root`` is ignored)."""
    from sklearn.datasets import load_breast_cancer as sk_load

    bunch = sk_load()
    y = bunch.target.astype(np.int64)
    train, test = stratified_split(y)
    x_train, x_test = standardise(bunch.data[train], bunch.data[test])
    parts = (x_train, y[train], x_test, y[test])
    freeze(*parts)
    return Dataset(BREAST_CANCER_INFO, *parts)
