"""A synthetic stand-in for a heavy-tailed, imbalanced tabular CSV file (the UCI "shuttle" shape).

    python -m simulations.heavy_tailed_csv /tmp/shuttle-like.csv      # 58,000 rows, 9 features, 7 classes

The UCI Statlog (Shuttle) data has 58,000 rows, 9 integer features and 7 classes, 78.6 % of the
rows in one class and classes with 10-50 rows; its features sit in a narrow bulk with rare values
thousands of units away (e.g. one column spans -26,930 .. 15,164). This file has the same shape,
generated (no data is shipped):

* class sizes exactly those of shuttle: 45,586 / 50 / 171 / 8,903 / 3,267 / 10 / 13 (labels 1..7);
* per class ``c`` and feature ``j`` a seeded centre ``mu[c, j] ~ N(0, 1.5^2)``; each value is
  ``offset[j] + scale[j] * (mu[c, j] + 0.3 t)`` with ``t`` Student-t with 1.2 degrees of freedom
  (heavy tails, infinite variance), rounded to an integer as in shuttle;
* the columns' offsets and scales differ by orders of magnitude (``OFFSETS``, ``SCALES``).

The classes are separable in the bulk (a model that sees the bulk reaches ~0.99 accuracy), while
the tails make a column's standard deviation many times its typical spread.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

CLASS_SIZES = (45586, 50, 171, 8903, 3267, 10, 13)
OFFSETS = (50.0, 0.0, 85.0, 0.0, 35.0, 0.0, 40.0, 10.0, 10.0)
SCALES = (8.0, 400.0, 6.0, 300.0, 20.0, 2000.0, 9.0, 40.0, 40.0)
TAIL_DF = 1.2


def make_table(seed: int = 0, sizes: Sequence[int] = CLASS_SIZES) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)``: integer-valued float features ``N x 9`` and labels ``1..7`` (rows shuffled, seeded)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 1.5, size=(len(sizes), len(OFFSETS)))
    labels = np.repeat(np.arange(1, len(sizes) + 1), sizes)
    rng.shuffle(labels)
    noise = 0.3 * rng.standard_t(TAIL_DF, size=(len(labels), len(OFFSETS)))
    x = np.asarray(OFFSETS) + np.asarray(SCALES) * (centres[labels - 1] + noise)
    return np.round(x), labels


def write_csv(path: str | Path, seed: int = 0, sizes: Sequence[int] = CLASS_SIZES) -> Path:
    """Write the table as ``A1..A9,class`` with a header row; returns the path."""
    x, y = make_table(seed, sizes)
    path = Path(path)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*(f"A{j + 1}" for j in range(x.shape[1])), "class"])
        for row, label in zip(x.astype(np.int64).tolist(), y.tolist(), strict=True):
            writer.writerow([*row, label])
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", type=Path, help="the CSV file to write")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(write_csv(args.path, args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
