"""A synthetic stand-in for a heavy-tailed, imbalanced tabular CSV file (the UCI "shuttle" shape).

    python -m simulations.heavy_tailed_csv /tmp/shuttle-like.csv            # write it: 58,000 rows, 9 x 7
    python -m simulations.heavy_tailed_csv /tmp/shuttle-like.csv --measure  # and compare the scalings

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

``--measure`` trains the run config's defaults (MLP, 5 iid clients, learning rate 0.05, batch 16,
momentum 0.9, 3 local epochs) on the file's canonical split twice: with every column standardised
(what csv files got before) and with :func:`fedforget.data.preprocess.scale_features` (what they get
now). For each it prints central training (3 epochs of :func:`fedforget.training.train` on all of the
train split) and 6 rounds of in-process FedAvg (every client trains from the global model with the
ClientApp's seeds, updates averaged by example count as Flower's FedAvg), with the test accuracy
after each round and the majority-class rate.
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


def measure(path: Path, rounds: int = 6) -> list[str]:
    """The comparison of ``--measure`` (module docstring), one line per scaling and trainer."""
    import torch

    from fedforget import data, models, training
    from fedforget.client_data import split_for
    from fedforget.config import RunConfig
    from fedforget.data.preprocess import scale_features, standardise, stratified_split
    from fedforget.federated import client_seed, weighted_average

    config = RunConfig.from_mapping({"dataset": f"csv:{path}", "num-rounds": rounds})
    loaded = data.load(config)  # labels and split as any run sees them
    table = np.loadtxt(path, delimiter=",", skiprows=1)
    codes = np.unique(table[:, -1], return_inverse=True)[1]
    train, test = stratified_split(codes)
    assert np.array_equal(codes[train], loaded.y_train)
    x_train, x_test, y_train, y_test = table[train, :-1], table[test, :-1], codes[train], codes[test]
    majority = np.bincount(y_test).max() / len(y_test)
    parts = split_for(config).clients
    kw = {"learning_rate": config.learning_rate, "batch_size": config.batch_size, "momentum": config.momentum}
    lines = [f"majority-class rate of the test split: {majority:.4f}"]
    for name, (xs, xt) in (
        ("standardised", standardise(x_train, x_test)),
        ("scale_features", scale_features(x_train, x_test)[:2]),
    ):
        model = models.build_model("mlp", loaded.info, seed=config.seed)
        try:
            training.train(model, xs, y_train, epochs=3, seed=config.seed, **kw)
            central = f"{training.evaluate(model, xt, y_test).accuracy:.4f}"
        except FloatingPointError:
            central = "diverged"
        model = models.build_model("mlp", loaded.info, seed=config.seed)
        history = []
        for t in range(1, rounds + 1):
            start = {k: v.detach().clone() for k, v in model.state_dict().items()}
            states, weights = [], []
            for k, part in enumerate(parts):
                model.load_state_dict(start)
                local = training.train(
                    model,
                    xs[part.train_ids],
                    y_train[part.train_ids],
                    epochs=config.local_epochs,
                    seed=client_seed(config, t, k),
                    **kw,
                )
                states.append({n: v.detach().numpy().copy() for n, v in model.state_dict().items()})
                weights.append(local.num_examples)
            averaged = weighted_average(states, weights)
            model.load_state_dict({n: torch.from_numpy(v) for n, v in averaged.items()})
            history.append(f"{training.evaluate(model, xt, y_test).accuracy:.4f}")
        lines.append(
            f"{name}: max |x| {np.abs(xs).max():.1f}; central 3 epochs test accuracy {central}; "
            f"FedAvg test accuracy by round {' '.join(history)}"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("path", type=Path, help="the CSV file to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--measure", action="store_true", help="then train on it with both scalings")
    args = parser.parse_args(argv)
    print(write_csv(args.path, args.seed))
    if args.measure:
        for line in measure(args.path.resolve()):
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
