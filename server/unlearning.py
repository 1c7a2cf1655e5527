"""Unlearning rounds on the server: ask the requesting clients for masks, check them, apply them.

This is the path of the client-side methods (``unlearn-method`` = forsaken, gradient-ascent, pga;
the device computes a delta, ``clients/methods.py``); finetune and retrain run FedAvg rounds on the
server instead (``server/server_methods.py``). Both end in the same :class:`UnlearningResult`.

For a batch of new withdrawal requests (several clients may withdraw in the same round):

1. each owning client gets the global model and the oracle (``train.unlearn``) and computes its
   Forsaken mask locally (``clients/app.py``);
2. every reply is decoded (:func:`protocol.replies.decode_unlearn`; it must be the partition the
   requests belong to) and its mask validated (:func:`validate_mask`, ``server/validation.py``):
   known parameter names, the parameter's shape, a floating dtype, only finite values, an L2 norm at
   most ``max-mask-ratio`` times ``max(model norm, floor)``, and no parameter tensor shrunk by more
   than that fraction of its norm; from the second round on, the node's summed masks of the attempt
   pass the same rules against the model before the attempt. A bad reply or mask is rejected,
   logged, and never touches the model;
3. the accepted masks are **summed** onto the global model: ``w <- w + sum_k m_k``. Each client's mask
   is that client's whole change for its own forget set, so averaging (FedAvg's rule) would shrink
   every change by the number of withdrawing clients; summing applies each in full, which to first
   order equals applying them one after another;
4. the evaluator measures FR, accuracies and attack AUC on the new model; the round repeats, up to
   ``unlearn-rounds`` times, until the target is met: ``unlearn-target=fr`` -> FR >= ``target-fr``;
   ``unlearn-target=retrain`` -> forget-vs-reference attack AUC within 0.03 of 0.5. A device's
   ``guard-*`` metrics of its first round (Forsaken's accuracies before the attempt) are sent back to
   it in the later rounds, so its accuracy guard bounds the whole attempt, not each round. A round in
   which every accepted mask is zero ends the attempt (the next round would repeat it);
5. the attempt returns its **best** round's model (highest FR, or AUC closest to 0.5; event
   ``unlearning-kept-round`` when that is not the last round), chosen among the rounds measured
   since the last node failure (a failed node's masks leave the model, so the earlier rounds' models
   are gone).

An attempt is all-or-nothing per node: a node that dies, answers with an error or sends a mask that
fails validation in any round drops out, every mask it sent in the attempt is taken back out of the
model (``w <- w_before + sum over the other nodes``), and its requests stay open for a later attempt
(``server/requests.py`` records that in the ledger).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict

from fedforget.attempt_rules import BestRound, target_met
from fedforget.verify import model_hash  # noqa: F401 - receipts' hash, re-exported
from protocol import messages as wire
from protocol.codec import oracle_to_records
from protocol.replies import ProtocolError, decode_unlearn
from server.attempt import Attempt, new_cost
from server.console import RoundTable
from server.evaluator import QUERY_TIMEOUT_S, KnownRequest, message_config
from server.exchange import exchange
from server.server_methods import SERVER_METHODS, run_server_method
from server.validation import MaskRejected, parameter_names, validate_mask


def apply_masks(
    state: Mapping[str, torch.Tensor], masks: list[Mapping[str, np.ndarray]]
) -> dict[str, torch.Tensor]:
    """``w + sum_k m_k`` for every masked parameter (others, and buffers, unchanged)."""
    out = {k: v.clone() for k, v in state.items()}
    for mask in masks:
        for name, delta in mask.items():
            out[name] = out[name] + torch.as_tensor(delta, dtype=out[name].dtype)
    return out


def _nbytes(record: ArrayRecord) -> int:
    return sum(record[k].numpy().nbytes for k in record)


@dataclasses.dataclass
class UnlearningResult:
    """One unlearning attempt: the new model, the requests it unlearned, the nodes that failed.

    ``arrays`` = the model before the attempt + the summed masks of the nodes that never failed; a
    failed node's masks (from every round of the attempt) are not in it, and its requests stay open.
    """

    arrays: ArrayRecord
    done: list[KnownRequest]
    failed: dict[int, str]
    last: dict[str, Any]
    cost: dict[str, float] = dataclasses.field(default_factory=dict)
    """``client-seconds``, ``bytes-sent``, ``unlearn-seconds`` summed over the attempt's rounds."""


def run_unlearning(attempt: Attempt, arrays: ArrayRecord) -> UnlearningResult:
    """Unlearning rounds for ``requests``, tolerant of nodes that die or send bad masks.

    Client-side methods (forsaken, gradient-ascent, pga: ``unlearn-method`` is sent in the message)
    return a delta each, validated and summed as above. A node that fails (error reply, no reply,
    rejected mask) in any round drops out of the attempt: its masks are taken back out of the model
    and its requests are returned as not done. Server-side methods (finetune, retrain) run FedAvg
    rounds through ``train_round`` (``server/server_methods.py``).
    """
    grid, run, evaluator, table = attempt.grid, attempt.run, attempt.evaluator, attempt.table
    server_round, requests = attempt.server_round, attempt.requests
    config, record = run.config, run.record
    if config.unlearn_method in SERVER_METHODS:
        model, failed_nodes, last, cost = run_server_method(attempt, arrays)
        for r in requests:
            if r.node_id in failed_nodes:
                r.outcome, r.before = "pending", None
        done = [r for r in requests if r.node_id not in failed_nodes]
        return UnlearningResult(model, done, failed_nodes, last, cost)
    trainable = parameter_names(run.model)
    oracle_arrays, oracle_config = oracle_to_records(evaluator.oracle())
    state_before = arrays.to_torch_state_dict()
    by_node: dict[int, list[KnownRequest]] = {}
    for r in requests:
        by_node.setdefault(r.node_id, []).append(r)
    applied: dict[int, dict[str, np.ndarray]] = {}  # node -> the sum of its accepted masks
    failed: dict[int, str] = {}
    row: dict[str, Any] = {}
    cost = new_cost()
    # a device's "guard-*" metrics of its first round go back to it in the later rounds: Forsaken's
    # accuracy guard stays relative to the model before the attempt (clients/methods.py)
    guards: dict[int, dict[str, float]] = {}
    best = BestRound(config.unlearn_target)  # the round the attempt keeps (fedforget/attempt_rules.py)
    for unlearn_round in range(1, config.unlearn_rounds + 1):
        live = {n: items for n, items in by_node.items() if n not in failed}
        if not live:
            break
        start = time.perf_counter()
        messages = []
        for node_id, items in live.items():
            msg_config = {
                **message_config(run, server_round),
                "request-ids": [r.request_id for r in items],
                "unlearn-method": config.unlearn_method,
                "unlearn-target": config.unlearn_target,
                "target-fr": config.target_fr,
                "forsaken-steps": config.forsaken_steps,
                **guards.get(node_id, {}),
            }
            content = RecordDict(
                {
                    "arrays": arrays,
                    "oracle": oracle_arrays,
                    "oracle-config": oracle_config,
                    "config": ConfigRecord(msg_config),
                }
            )
            messages.append(Message(content, dst_node_id=node_id, message_type=wire.UNLEARN))
        bytes_down = sum(_nbytes(arrays) + _nbytes(oracle_arrays) for _ in messages)
        record.append_metrics(
            {
                "round": server_round,
                "phase": "unlearn",
                "event": "unlearn-round-sent",
                "sending-round": unlearn_round,
                "nodes": sorted(live),
            }
        )
        failed_before = len(failed)  # a node failing now takes its masks out: the model changes
        got = exchange(grid, messages, QUERY_TIMEOUT_S)
        state = arrays.to_torch_state_dict()
        accepted: list[dict[str, np.ndarray]] = []
        client_seconds, bytes_up = 0.0, 0
        for node, reason in got.failures.items():
            failed[node] = f"client error: {reason[-300:]}"
            _log_rejection(record, table, server_round, node, failed[node])
        for node, reply in got.replies.items():
            try:
                answer = decode_unlearn(reply)
                partition = by_node[node][0].partition_id
                if answer.partition != partition:
                    raise MaskRejected(
                        f"answers for partition {answer.partition}, asked partition {partition}"
                    )
                mask = answer.mask
                validate_mask(mask, state, trainable, config.max_mask_ratio)
                total = dict(applied.get(node, {}))
                for name, delta in mask.items():
                    total[name] = total[name] + delta if name in total else delta.copy()
                if node in applied:  # the attempt's whole change by this node, against the model before it
                    validate_mask(total, state_before, trainable, config.max_mask_ratio)
            except (ProtocolError, MaskRejected) as error:
                failed[node] = str(error)
                _log_rejection(record, table, server_round, node, str(error))
                continue
            accepted.append(mask)
            guards.setdefault(node, answer.guards)
            applied[node] = total
            bytes_up += answer.nbytes
            client_seconds += answer.client_seconds
        for node in failed:
            applied.pop(node, None)
            for r in by_node[node]:
                r.outcome, r.before = "pending", None
        arrays = ArrayRecord(apply_masks(state_before, list(applied.values())))
        row = {
            "round": server_round,
            "phase": "unlearn",
            "unlearn-round": unlearn_round,
            "method": config.unlearn_method,
            "request-ids": [r.request_id for items in live.values() for r in items],
            **attempt.evaluate_global(run, arrays),
            "masks-accepted": len(accepted),
            "masks-rejected": len(messages) - len(accepted),
            "mask-l2": float(
                math.sqrt(
                    sum(float(np.square(d, dtype=np.float64).sum()) for m in accepted for d in m.values())
                )
            ),
            "mask-nonzero": int(sum(int(np.count_nonzero(d)) for m in accepted for d in m.values())),
            "bytes-down": bytes_down,
            "bytes-up": bytes_up,
            "client-seconds": client_seconds,
        }
        cost["client-seconds"] += client_seconds
        cost["bytes-sent"] += float(bytes_down + bytes_up)
        cost["unlearn-seconds"] += time.perf_counter() - start
        row.update(evaluator.measure(grid, arrays, server_round))
        row["seconds"] = time.perf_counter() - start
        record.append_metrics(row)
        table.print_row({**row, "phase": f"unlearn{unlearn_round}"})
        best.offer(unlearn_round, row, arrays, failed)
        if target_met(config.unlearn_target, config.target_fr, row):
            break
        if accepted and row["mask-nonzero"] == 0 and len(failed) == failed_before:
            # every device left the model as it was: the next round would start from the same model
            # with the same seeds and data and repeat this one
            record.append_metrics(
                {
                    "round": server_round,
                    "phase": "unlearn",
                    "event": "unlearning-stalled",
                    "unlearn-round": unlearn_round,
                }
            )
            table.print_event(f"unlearning round {unlearn_round} changed nothing: no further rounds")
            break
    kept = best.earlier(int(row.get("unlearn-round", 0)), failed)
    if kept is not None:  # a later round made it worse (several devices' masks can undo each other)
        number, arrays, best_row = kept
        record.append_metrics(
            {
                "round": server_round,
                "phase": "unlearn",
                "event": "unlearning-kept-round",
                "unlearn-round": number,
                "last-unlearn-round": row.get("unlearn-round"),
                "fr": best_row.get("fr"),
                "attack-auc": best_row.get("attack-auc"),
            }
        )
        table.print_event(
            f"unlearning round {number} was the attempt's best: its model is kept "
            f"(round {row.get('unlearn-round')} judged worse)"
        )
        row = best_row
    done = [r for node, items in by_node.items() if node not in failed for r in items]
    return UnlearningResult(arrays, done, failed, row, cost)


def _log_rejection(record: Any, table: RoundTable, server_round: int, node: int, reason: str) -> None:
    record.append_metrics(
        {"round": server_round, "phase": "unlearn", "event": "mask-rejected", "node": node, "reason": reason}
    )
    table.print_event(f"mask from node {node} rejected: {reason}")


def ensure_array_record(state: Mapping[str, torch.Tensor]) -> ArrayRecord:
    return ArrayRecord({k: Array(v.detach().cpu().numpy()) for k, v in state.items()})
