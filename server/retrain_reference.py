"""The retrain reference of a Flower run: what the oracle says of a model that never saw the data.

FR means little on its own: a model retrained without the withdrawn samples also has an FR (the
share of forget samples the oracle called members before that it calls non-members in the retrained
model), and forgetting *more* than retraining is detectable too (``docs/forsaken.md``, "Two
forgetting targets"). With ``retrain-reference = 1`` the server, after every unlearning attempt,

1. retrains in its own process: :func:`fedforget.federated.fedavg` from the run's seeded initial
   model, the rounds trained so far (``server_round - 1``), every client without every sample
   withdrawn so far (the model the federation would have had if they had never been there; the
   in-process FedAvg equals the Flower rounds up to float32 rounding when every client takes part
   in every round -- with ``clients-per-round`` > 0 it is an approximation, and says so);
2. saves the retrained model in the run record (``checkpoints/retrain-reference-<round>.pt``, named
   in the receipt as ``retrain-checkpoint``) so that anyone can audit it;
3. has the judge score it exactly as every unlearning round (``query.judge``: calibrated on the
   retrained model itself, each forget sample against its "before" bin);
4. records ``fr-retrain``, ``attack-auc-retrain`` (the headline attack's), ``fr-<attack>-retrain``,
   ``attack-auc-<attack>-retrain`` and ``fr-status-<attack>-retrain`` for every attack,
   ``forget-accuracy-retrain``, ``test-accuracy-retrain``, ``retrain-rounds``, ``retrain-seconds`` in a
   metrics row (``event`` = ``retrain-reference``); ``server/requests.py`` adds the verdict per attack
   (:func:`fedforget.judge.retrain_verdict`: retrain-equivalent, under- or over-forgetting) and puts
   both in the receipt.

A research instrument for simulations: the server process reads every client's partition to
retrain, which a real deployment's server cannot (and must not) do. Off by default.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from flwr.app import ArrayRecord
from flwr.serverapp import Grid

from fedforget.federated import fedavg
from server.evaluator import ForgettingEvaluator
from server.setup import PreparedRun

__all__ = ["retrain_reference"]

_MEASURED = ("fr", "fr-status", "attack-auc", "forget-accuracy")


def retrain_reference(
    grid: Grid, run: PreparedRun, evaluator: ForgettingEvaluator, server_round: int
) -> dict[str, Any]:
    """Retrain without every withdrawn sample and judge it (module docstring); the metrics row's fields.

    Returns ``{}`` when nothing has been withdrawn yet.
    """
    active = evaluator.active()
    if not active:
        return {}
    exclude: dict[int, list[np.ndarray]] = {}
    for request in active:
        exclude.setdefault(request.partition_id, []).append(request.ids)
    rounds = server_round - 1
    start = time.perf_counter()
    retrained = fedavg(
        run.config,
        exclude={pid: np.unique(np.concatenate(parts)) for pid, parts in exclude.items()},
        rounds=rounds,
        evaluate=False,
    )
    seconds = time.perf_counter() - start
    checkpoint = f"retrain-reference-{server_round}"
    run.record.save_named_checkpoint(checkpoint, retrained.state_dict)
    run.record.save_named_checkpoint("retrain-reference", retrained.state_dict)  # the latest one
    measured = evaluator.measure(
        grid, ArrayRecord(retrained.state_dict), server_round, model_label="retrain-reference"
    )
    per_attack = [k for k in measured if k.startswith(("fr-", "attack-auc-")) and k != "fr-reason"]
    keys = [*_MEASURED, *(k for k in per_attack if not k.startswith("attack-auc-before"))]
    row: dict[str, Any] = {f"{key}-retrain": measured.get(key) for key in keys}
    row["retrain-checkpoint"] = f"checkpoints/{checkpoint}.pt"
    row.update(
        {
            "test-accuracy-retrain": retrained.test_accuracy,
            "retrain-rounds": rounds,
            "retrain-seconds": seconds,
            "retrain-exact": run.config.clients_per_round in (0, run.config.num_clients),
        }
    )
    if "fr-missing" in measured:
        row["fr-retrain-missing"] = measured["fr-missing"]
    return row
