"""A seeded synthetic dataset, generated in memory (no data folder needed).

* **memorise**: 2,000 rows x 128 standardised features, 30 classes; 1,601 train + 399 test. A model
  can learn only a weak signal from it and must *memorise* the rest, so a small MLP trained on a few
  hundred rows reaches train accuracy 1.0 but test accuracy only about 0.4-0.5, and a loss-threshold
  membership attack separates its members from never-seen rows (AUC above 0.9). It stands in for an
  overfitted real dataset such as location where tests must run on any machine.

Generation (``numpy.random.RandomState(MEMORISE_SEED)``, whose stream NumPy keeps stable; draws in
this order)::

    c_i     ~ Uniform{0..K-1}                                   i = 1..N      (the "true" class)
    P_k     ~ N(0, I_D)                                         k = 0..K-1    (class prototypes)
    x_i     =  SIGNAL * P_{c_i} + e_i,   e_i ~ N(0, I_D)                      (weak class signal)
    flip_i  ~ Bernoulli(LABEL_NOISE),   r_i ~ Uniform{0..K-1}
    y_i     =  r_i if flip_i else c_i                                         (label noise)

with N = 2000, D = 128, K = 30, SIGNAL = 0.4, LABEL_NOISE = 0.2. Canonical order: row order, split by
:func:`fedforget.data.preprocess.stratified_split` on ``y`` (seeded, stratified 80/20), each split in
the original order; features standardised with the train mean/std, float32.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedforget.data.base import Dataset, DatasetInfo
from fedforget.data.preprocess import freeze, standardise, stratified_split

MEMORISE_SEED = 20240515
NUM_ROWS, NUM_FEATURES, NUM_CLASSES = 2000, 128, 30
SIGNAL, LABEL_NOISE = 0.4, 0.2

MEMORISE_INFO = DatasetInfo("memorise", (NUM_FEATURES,), NUM_CLASSES, "tabular")


def load_memorise(root: Path | None = None) -> Dataset:
    """The ``memorise`` dataset (see the module docstring; ``root`` is ignored)."""
    rng = np.random.RandomState(MEMORISE_SEED)
    true_class = rng.randint(0, NUM_CLASSES, NUM_ROWS)
    prototypes = rng.normal(size=(NUM_CLASSES, NUM_FEATURES))
    x = SIGNAL * prototypes[true_class] + rng.normal(size=(NUM_ROWS, NUM_FEATURES))
    flip = rng.random_sample(NUM_ROWS) < LABEL_NOISE
    y = np.where(flip, rng.randint(0, NUM_CLASSES, NUM_ROWS), true_class).astype(np.int64)
    train, test = stratified_split(y)
    x_train, x_test = standardise(x[train], x[test])
    parts = (x_train, y[train], x_test, y[test])
    freeze(*parts)
    return Dataset(MEMORISE_INFO, *parts)
