"""Forsaken as a withdrawing device runs it in the federation: the one copy of its inputs' rules.

The ClientApp (``clients/methods.py``, message ``train.unlearn``) and the in-process benchmarks
(``simulations/forsaken_rounds.py``) both call :func:`unlearn_on_device`, so both compute the same
mask from the same model and data:

* **reference** = the device's held-out samples (never trained on);
* **retain** = a seeded subset of at most ``retain-samples`` of the device's remaining training samples,
  the permutation drawn from ``numpy.random.default_rng([seed, server_round, partition_id, 97])``
  (:func:`retained_subset`); a device that withdrew everything retains its held-out samples instead,
  so the accuracy term stays meaningful;
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

__all__ = ["forsaken_seed", "guard_name", "retained_subset", "unlearn_on_device"]

Pair = tuple[np.ndarray, np.ndarray]


def guard_name(key: str) -> str:
    """The metric / message key of one of Forsaken's guarded accuracies: ``retain_acc`` ->
    ``guard-retain-acc`` (what a device reports in its first round and gets back in the later ones)."""
    return "guard-" + key.replace("_", "-")


def forsaken_seed(run_seed: int, server_round: int) -> int:
    """Forsaken's seed on a device in server round ``server_round``: ``run_seed * 7_919 + server_round``."""
    return int(run_seed) * 7_919 + int(server_round)


def retained_subset(
    retained: Pair, *, reference: Pair, run_seed: int, server_round: int, partition_id: int, limit: int
) -> Pair:
    """At most ``limit`` of the ``retained`` samples, seeded (module docstring); ``reference`` when no
    retained sample is left."""
    x_keep, y_keep = retained
    if len(y_keep) == 0:
        x_keep, y_keep = reference
    rng = np.random.default_rng([int(run_seed), int(server_round), int(partition_id), 97])
    keep = rng.permutation(len(y_keep))[: int(limit)]
    return x_keep[keep], y_keep[keep]


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
    fields: dict[str, Any] = {
        "target": target,
        "target_fr": target_fr,
        "max_steps": max_steps,
        "seed": forsaken_seed(run_seed, server_round),
    }
    return unlearn(
        model,
        forget=forget,
        reference=reference,
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
