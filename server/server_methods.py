"""Server-side unlearning methods: no delta from the device, only FedAvg rounds on the remaining data.

Withdrawn samples are tombstoned on their device from the round of the request on and are never
trained on again (``fedforget/device.py``), so a FedAvg round run by the server after a withdrawal is
a round on the remaining data ``D \\ D_u``. Both methods are attempts of the same withdrawal flow as
Forsaken (``server/requests.py``: ledger states, receipts, ``before-`` / ``after-unlearning``
checkpoints); every round is a ``phase = "unlearn"`` row of ``metrics.jsonl`` with FR, accuracies,
attack AUC, bytes and client seconds.

* ``finetune``: ``w <- FedAvg round(w)`` on the remaining data, up to ``unlearn-rounds`` times, FR
  measured after every round, stopping early once the target (``unlearn-target``) is met.
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

import math
import time
from collections.abc import Callable
from typing import Any

import torch
from flwr.app import ArrayRecord
from flwr.serverapp import Grid

from fedforget import models
from server.console import RoundTable
from server.evaluator import ForgettingEvaluator, KnownRequest
from server.rounds import RoundFailedError
from server.setup import PreparedRun

SERVER_METHODS = ("finetune", "retrain", "federaser")
"""Methods the server runs without a delta from the withdrawing devices."""

TrainRound = Callable[[ArrayRecord, int], tuple[ArrayRecord, dict[str, Any]]]
"""``train_round(model, numbered_round) -> (new model, its numbers)`` (``server/rounds.py``)."""


def initial_state(run: PreparedRun) -> dict[str, torch.Tensor]:
    """``w_0``: the run's seeded initial model (the same one round 1 started from)."""
    return models.build_model(run.config.model, run.dataset.info, seed=run.config.seed).state_dict()


def change_l2(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> float:
    """``||w_after - w_before||_2`` over the floating entries."""
    total = 0.0
    for name, value in before.items():
        if value.is_floating_point():
            total += float((after[name].double() - value.double()).square().sum())
    return math.sqrt(total)


def run_server_method(
    grid: Grid,
    run: PreparedRun,
    evaluator: ForgettingEvaluator,
    arrays: ArrayRecord,
    server_round: int,
    requests: list[KnownRequest],
    table: RoundTable,
    evaluate_global: Callable[[PreparedRun, ArrayRecord], dict[str, float]],
    train_round: TrainRound,
) -> tuple[ArrayRecord, dict[int, str], dict[str, Any], dict[str, float]]:
    """Run ``unlearn-method`` (finetune or retrain) for ``requests`` before round ``server_round``.

    Returns ``(model, failed nodes -> reason, last row, cost)``; ``cost`` sums ``client-seconds``,
    ``bytes-sent`` and ``unlearn-seconds`` over the attempt. On failure the model is ``arrays``.
    """
    from server.unlearning import target_met

    config, record = run.config, run.record
    method = config.unlearn_method
    if method not in SERVER_METHODS:
        raise ValueError(f"run_server_method runs {', '.join(SERVER_METHODS)}, not {method!r}")
    state_before = arrays.to_torch_state_dict()
    nodes = sorted({r.node_id for r in requests})
    request_ids = [r.request_id for r in requests]
    if method == "federaser":
        return _federaser(grid, run, evaluator, arrays, server_round, requests, table, evaluate_global)
    if method == "retrain":
        model = ArrayRecord(initial_state(run))
        numbering = list(range(1, server_round))
    else:
        model = arrays
        numbering = [server_round] * config.unlearn_rounds
    cost = {"client-seconds": 0.0, "bytes-sent": 0.0, "unlearn-seconds": 0.0}
    row: dict[str, Any] = {}
    for unlearn_round, numbered in enumerate(numbering or [0], start=1):
        start = time.perf_counter()
        trained: dict[str, Any] = {}
        if numbered:
            try:
                model, trained = train_round(model, numbered)
            except RoundFailedError as error:
                reason = f"{method} round failed: {error}"
                return arrays, dict.fromkeys(nodes, reason), row, cost
        seconds = time.perf_counter() - start
        cost["client-seconds"] += float(trained.get("client-seconds", 0.0))
        cost["bytes-sent"] += float(trained.get("bytes-down", 0) + trained.get("bytes-up", 0))
        cost["unlearn-seconds"] += seconds
        row = {
            "round": server_round,
            "phase": "unlearn",
            "unlearn-round": unlearn_round,
            "method": method,
            "request-ids": request_ids,
            **evaluate_global(run, model),
            "trained-round": numbered,
            "train-loss": trained.get("train-loss", float("nan")),
            "clients": trained.get("clients", 0),
            "failures": trained.get("failures", 0),
            "model-change-l2": change_l2(state_before, model.to_torch_state_dict()),
            "bytes-down": trained.get("bytes-down", 0),
            "bytes-up": trained.get("bytes-up", 0),
            "client-seconds": float(trained.get("client-seconds", 0.0)),
        }
        row.update(evaluator.measure(grid, model, server_round))
        row["seconds"] = time.perf_counter() - start
        record.append_metrics(row)
        table.print_row({**row, "phase": f"{method}{unlearn_round}"})
        if method == "finetune" and target_met(config.unlearn_target, config.target_fr, row):
            break
    return model, {}, row, cost


def _federaser(
    grid: Grid,
    run: PreparedRun,
    evaluator: ForgettingEvaluator,
    arrays: ArrayRecord,
    server_round: int,
    requests: list[KnownRequest],
    table: RoundTable,
    evaluate_global: Callable[[PreparedRun, ArrayRecord], dict[str, float]],
) -> tuple[ArrayRecord, dict[int, str], dict[str, Any], dict[str, float]]:
    """FedEraser's calibration over the rounds stored before ``server_round`` (module docstring)."""
    import numpy as np

    from fedforget.baselines import calibration_step
    from server.rounds import calibration_round
    from server.update_store import update_store

    config, record = run.config, run.record
    disk = update_store(record.path, config.federaser_every)
    store = disk.load(before=server_round)
    storage = disk.storage_bytes
    epochs = max(1, config.local_epochs // 2)
    state_before = arrays.to_torch_state_dict()
    nodes = sorted({r.node_id for r in requests})
    request_ids = [r.request_id for r in requests]
    if store.rounds:
        current = {k: np.array(v, copy=True) for k, v in store.global_states[store.rounds[0]].items()}
    else:  # withdrawn before any training round: the model is still w_0
        current = {k: v.numpy().copy() for k, v in initial_state(run).items()}
    cost = {"client-seconds": 0.0, "bytes-sent": 0.0, "unlearn-seconds": 0.0}
    row: dict[str, Any] = {}
    model = ArrayRecord({k: torch.from_numpy(np.array(v)) for k, v in current.items()})
    for j, t in enumerate(store.rounds or [0], start=1):
        start = time.perf_counter()
        crow: dict[str, Any] = {}
        if t:
            states, crow = calibration_round(grid, run, model, t, table, epochs)
            states = {p: v for p, v in states.items() if p in store.updates[t]}
            if not states:
                reason = (
                    f"federaser calibration of stored round {t}: no remaining client with a stored update"
                )
                return arrays, dict.fromkeys(nodes, reason), row, cost
            current = calibration_step(
                store,
                t,
                current,
                {p: s for p, (s, _) in states.items()},
                {p: n for p, (_, n) in states.items()},
            )
            model = ArrayRecord({k: torch.from_numpy(np.array(v)) for k, v in current.items()})
        seconds = time.perf_counter() - start
        cost["client-seconds"] += float(crow.get("client-seconds", 0.0))
        cost["bytes-sent"] += float(crow.get("bytes-down", 0) + crow.get("bytes-up", 0))
        cost["unlearn-seconds"] += seconds
        row = {
            "round": server_round,
            "phase": "unlearn",
            "unlearn-round": j,
            "method": "federaser",
            "request-ids": request_ids,
            **evaluate_global(run, model),
            "stored-round": t,
            "calibration-epochs": epochs,
            "storage-bytes": storage,
            "clients": crow.get("clients", 0),
            "failures": crow.get("failures", 0),
            "model-change-l2": change_l2(state_before, model.to_torch_state_dict()),
            "bytes-down": crow.get("bytes-down", 0),
            "bytes-up": crow.get("bytes-up", 0),
            "client-seconds": float(crow.get("client-seconds", 0.0)),
        }
        row.update(evaluator.measure(grid, model, server_round))
        row["seconds"] = time.perf_counter() - start
        record.append_metrics(row)
        table.print_row({**row, "phase": f"federaser{j}"})
    cost["storage-bytes"] = float(storage)
    return model, {}, row, cost
