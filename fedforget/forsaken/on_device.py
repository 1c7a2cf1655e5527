"""Forsaken as a withdrawing device runs it in the federation: the one copy of its inputs' rules.

The ClientApp (``clients/methods.py``, message ``train.unlearn``) and the in-process benchmarks
(``simulations/forsaken_rounds.py``) both call :func:`unlearn_on_device`, so both compute the same
mask from the same model and data:

* **reference** = the device's held-out samples (never trained on);
* **retain** = a seeded subset of at most ``retain-samples`` of the device's remaining training samples,
  the permutation drawn from ``numpy.random.default_rng([seed, server_round, partition_id, 97])``
  (:func:`retained_subset`). A device that withdrew everything has none: it splits its never-seen
  samples (held-out and lent) by the same permutation, retains the first half (so the accuracy term
  stays meaningful) and keeps the second as the reference (:func:`split_reference`). Training on the
  very samples the forget set is compared with would make them look like members, and the forget set
  with them;
* **config** = ``ForsakenConfig(target, target_fr, max_steps, seed=seed * 7_919 + server_round)``
  (:func:`forsaken_seed`), with the benchmarks' ``overrides`` on top (the federation has none);
* **accuracy_baseline** = the guard's accuracies of the attempt's first round, sent back by the server
  in the later rounds (one accuracy budget per withdrawal), ``None`` in the first round.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from torch import nn

from fedforget.forsaken.config import ForsakenConfig
from fedforget.forsaken.loop import ForsakenResult, unlearn

__all__ = ["forsaken_seed", "guard_name", "retained_subset", "split_reference", "unlearn_on_device"]

Pair = tuple[np.ndarray, np.ndarray]


def guard_name(key: str) -> str:
    """The metric / message key of one of Forsaken's guarded accuracies: ``retain_acc`` ->
    ``guard-retain-acc`` (what a device reports in its first round and gets back in the later ones)."""
    return "guard-" + key.replace("_", "-")


def forsaken_seed(run_seed: int, server_round: int) -> int:
    """Forsaken's seed on a device in server round ``server_round``: ``run_seed * 7_919 + server_round``."""
    return int(run_seed) * 7_919 + int(server_round)


def _permutation(n: int, run_seed: int, server_round: int, partition_id: int) -> np.ndarray:
    return np.random.default_rng([int(run_seed), int(server_round), int(partition_id), 97]).permutation(n)


def retained_subset(
    retained: Pair, *, reference: Pair, run_seed: int, server_round: int, partition_id: int, limit: int
) -> Pair:
    """At most ``limit`` of the ``retained`` samples, seeded (module docstring); when no retained
    sample is left, at most ``limit`` of the first half of ``reference`` (:func:`split_reference`)."""
    x_keep, y_keep = retained
    if len(y_keep) == 0:
        (x_keep, y_keep), _ = split_reference(
            reference, run_seed=run_seed, server_round=server_round, partition_id=partition_id
        )
        return x_keep[: int(limit)], y_keep[: int(limit)]
    keep = _permutation(len(y_keep), run_seed, server_round, partition_id)[: int(limit)]
    return x_keep[keep], y_keep[keep]


def split_reference(
    reference: Pair, *, run_seed: int, server_round: int, partition_id: int
) -> tuple[Pair, Pair]:
    """``(retained stand-in, reference)`` of a device with no retained sample: the first and second
    half of a seeded permutation of its never-seen ``reference`` samples (module docstring)."""
    x, y = reference
    order = _permutation(len(y), run_seed, server_round, partition_id)
    half = len(order) // 2
    return (x[order[:half]], y[order[:half]]), (x[order[half:]], y[order[half:]])


def unlearn_on_device(
    model: nn.Module,
    *,
    forget: Pair,
    reference: Pair,
    retained: Pair,
    run_seed: int,
    server_round: int,
    partition_id: int,
    retain_samples: int,
    target: str,
    target_fr: float,
    max_steps: int,
    oracle: Any,
    accuracy_baseline: Mapping[str, float] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> ForsakenResult:
    """The device's Forsaken call for one unlearning round (module docstring); ``model`` is not changed.

    ``oracle``: the *steering* oracle the method may use (never the server's judge).
    """
    if len(retained[1]) == 0:  # everything withdrawn: train on one half, compare with the other
        _, reference_half = split_reference(
            reference, run_seed=run_seed, server_round=server_round, partition_id=partition_id
        )
    else:
        reference_half = reference
    fields: dict[str, Any] = {
        "target": target,
        "target_fr": target_fr,
        "max_steps": max_steps,
        "seed": forsaken_seed(run_seed, server_round),
    }
    return unlearn(
        model,
        forget=forget,
        reference=reference_half,
        retain=retained_subset(
            retained,
            reference=reference,
            run_seed=run_seed,
            server_round=server_round,
            partition_id=partition_id,
            limit=retain_samples,
        ),
        config=ForsakenConfig(**{**fields, **(overrides or {})}),
        oracle=oracle,
        accuracy_baseline=accuracy_baseline,
    )
