"""Server-side unlearning methods: no delta from the device, only FedAvg rounds on the remaining data.

Withdrawn samples are tombstoned on their device from the round of the request on and are never
trained on again (``fedforget/device.py``), so a FedAvg round run by the server after a withdrawal is
a round on the remaining data ``D \\ D_u``. Both methods are attempts of the same withdrawal flow as
Forsaken (``server/requests.py``: ledger states, receipts, ``before-`` / ``after-unlearning``
checkpoints); every round is a ``phase = "unlearn"`` row of ``metrics.jsonl`` with FR, accuracies,
attack AUC, bytes and client seconds.

* ``finetune``: ``w <- FedAvg round(w)`` on the remaining data, ``unlearn-rounds`` times, the judge
  measuring after every round (it never stops the method: the judge is never the steer).
* ``retrain``: ``w <- w_0`` (the run's seeded initial model, ``models.build_model(model, seed)``),
  then ``R - 1`` FedAvg rounds on the remaining data when the withdrawal is handled before training
  round ``R`` (the rounds done so far), numbered ``1 .. R - 1`` so every client uses the seeds of the
  original rounds. The result is FedAvg from scratch without the withdrawn data (exact unlearning,
  ``fedforget.baselines.retrain`` computes the same model in-process); it always runs every round.
* ``federaser`` (Liu et al., IWQoS 2021): during training the loop stores ``w_t`` and every
  accepted client update ``U_t^k`` every ``federaser-every`` rounds (``server/update_store.py``;
  its size is the ``storage-bytes`` cost). Unlearning rebuilds the model from ``w_{t_1}`` over the
  stored rounds ``t_j < R``: every live device trains ``max(1, local-epochs // 2)`` epochs from
  ``w~_j`` on its remaining data (``calibration_round``), and the server takes each update's
  direction with the stored update's per-tensor norm, ``w~_{j+1} = w~_j + sum_k (n'_k / n')
  ||U_{t_j}^k|| U^_j^k / ||U^_j^k||`` (:func:`fedforget.baselines.calibration_step`). Devices without
  a stored update for that round (not sampled then) or without data left are left out of it.

Failure rule: a training round in which some clients fail is aggregated over the others (as in
normal training); a round in which no client succeeds fails the whole attempt: the model stays as it
was before the attempt and every request goes back to ``received`` for a later attempt.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from flwr.app import ArrayRecord

from fedforget import models
from server.attempt import Attempt, TrainRound, change_l2, new_cost
from server.rounds import RoundFailedError
from server.setup import PreparedRun

__all__ = ["SERVER_METHODS", "TrainRound", "change_l2", "initial_state", "run_server_method"]

SERVER_METHODS = ("finetune", "retrain", "federaser")
"""Methods the server runs without a delta from the withdrawing devices."""

Outcome = tuple[ArrayRecord, dict[int, str], dict[str, Any], dict[str, float]]
"""``(model, failed nodes -> reason, last row, cost)``; on failure the model is the one before."""


def initial_state(run: PreparedRun) -> dict[str, torch.Tensor]:
    """``w_0``: the run's seeded initial model (the same one round 1 started from)."""
    return models.build_model(run.config.model, run.dataset.info, seed=run.config.seed).state_dict()


def run_server_method(attempt: Attempt, arrays: ArrayRecord) -> Outcome:
    """Run ``unlearn-method`` (finetune, retrain or federaser) for the attempt's requests.

    Returns ``(model, failed nodes -> reason, last row, cost)``; ``cost`` sums ``client-seconds``,
    ``bytes-sent`` and ``unlearn-seconds`` over the attempt. On failure the model is ``arrays``.
    """
    config = attempt.run.config
    method = config.unlearn_method
    if method not in SERVER_METHODS:
        raise ValueError(f"run_server_method runs {', '.join(SERVER_METHODS)}, not {method!r}")
    if method == "federaser":
        return _federaser(attempt, arrays)
    if attempt.train_round is None:
        raise ValueError(f"unlearn-method {method!r} needs the loop's train_round")
    state_before = arrays.to_torch_state_dict()
    if method == "retrain":
        model = ArrayRecord(initial_state(attempt.run))
        numbering = list(range(1, attempt.server_round))
    else:
        model = arrays
        numbering = [attempt.server_round] * config.unlearn_rounds
    cost = new_cost()
    row: dict[str, Any] = {}
    for unlearn_round, numbered in enumerate(numbering or [0], start=1):
        start = time.perf_counter()
        trained: dict[str, Any] = {}
        if numbered:
            try:
                model, trained = attempt.train_round(model, numbered)
            except RoundFailedError as error:
                reason = f"{method} round failed: {error}"
                return arrays, dict.fromkeys(attempt.nodes, reason), row, cost
        fields = {"trained-round": numbered, "train-loss": trained.get("train-loss", float("nan"))}
        # Finetune runs all its unlearn-rounds: it has no oracle of its own to stop by, and the judge
        # that measured this row may never be what a method stops by (docs/forgetting-rate.md).
        row = attempt.record_server_round(model, state_before, unlearn_round, start, cost, trained, fields)
    return model, {}, row, cost


def _federaser(attempt: Attempt, arrays: ArrayRecord) -> Outcome:
    """FedEraser's calibration over the rounds stored before ``server_round`` (module docstring)."""
    import numpy as np

    from fedforget.baselines import calibration_step
    from server.rounds import calibration_round
    from server.update_store import update_store

    run, server_round = attempt.run, attempt.server_round
    disk = update_store(run.record.path, run.config.federaser_every)
    store = disk.load(before=server_round)
    storage = disk.storage_bytes
    epochs = max(1, run.config.local_epochs // 2)
    state_before = arrays.to_torch_state_dict()
    if store.rounds:
        current = {k: np.array(v, copy=True) for k, v in store.global_states[store.rounds[0]].items()}
    else:  # withdrawn before any training round: the model is still w_0
        current = {k: v.numpy().copy() for k, v in initial_state(run).items()}
    cost = new_cost()
    row: dict[str, Any] = {}
    model = ArrayRecord({k: torch.from_numpy(np.array(v)) for k, v in current.items()})
    for j, t in enumerate(store.rounds or [0], start=1):
        start = time.perf_counter()
        crow: dict[str, Any] = {}
        if t:
            states, crow = calibration_round(attempt.grid, run, model, t, attempt.table, epochs)
            states = {p: v for p, v in states.items() if p in store.updates[t]}
            if not states:
                reason = (
                    f"federaser calibration of stored round {t}: no remaining client with a stored update"
                )
                return arrays, dict.fromkeys(attempt.nodes, reason), row, cost
            current = calibration_step(
                store,
                t,
                current,
                {p: s for p, (s, _) in states.items()},
                {p: n for p, (_, n) in states.items()},
            )
            model = ArrayRecord({k: torch.from_numpy(np.array(v)) for k, v in current.items()})
        fields = {"stored-round": t, "calibration-epochs": epochs, "storage-bytes": storage}
        row = attempt.record_server_round(model, state_before, j, start, cost, crow, fields)
    cost["storage-bytes"] = float(storage)
    return model, {}, row, cost
