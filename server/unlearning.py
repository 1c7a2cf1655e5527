"""Unlearning rounds on the server: the attempt loop over the Flower Grid.

This is the path of the client-side methods (``unlearn-method`` = forsaken, gradient-ascent, pga;
the device computes a delta, ``clients/methods.py``); finetune, retrain and federaser run FedAvg
rounds on the server instead (``server/server_methods.py``). Both end in the same
:class:`UnlearningResult`.

The loop is :func:`fedforget.unlearning_attempt.run_attempt` (the one the in-process benchmarks run
too); :class:`GridTransport` is its transport here:

* **asking**: each owning node gets the global model and the method's settings (``train.unlearn``:
  ``request-ids``, ``unlearn-method``, ``unlearn-target``, ``target-fr``, ``forsaken-steps``, and from
  the attempt's second round on its first round's ``guard-*`` accuracies, so that a device's accuracy
  guard bounds the whole attempt), and ``steer-reference``: up to ``steer-reference-samples``
  never-seen samples of the server's auxiliary data outside the judge's half
  (:func:`fedforget.steer.steer_reference`) that the device steers by beside its held-out samples.
  **No judge and no oracle travel in it**: a device steers by its own oracle (:mod:`fedforget.steer`)
  and says in its reply whether that oracle finds the target met;
* **validating**: a reply must decode (:func:`protocol.replies.decode_unlearn`) and be the requests'
  partition's; the mask, and the node's summed masks against the model before the attempt, must
  pass :func:`server.validation.validate_mask` (known trainable names, shapes, finite floats, an L2
  norm bounded against a floor, no tensor cancelled);
* **measuring**: the server's test accuracy and the judge's FR and AUC on the new model
  (:meth:`server.evaluator.ForgettingEvaluator.measure`), logged and printed, never read by the loop.

The accepted masks are **summed** onto the global model: ``w <- w + sum_k m_k`` (each client's mask
is its whole change for its own forget set; averaging would shrink each by the number of withdrawing
clients). An attempt is all-or-nothing per node: a node that dies, answers with an error or sends a
mask that fails validation in any round drops out, every mask it sent in the attempt is taken back
out of the model, and its requests stay open for a later attempt (``server/requests.py``).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict

from fedforget.steer import steer_reference
from fedforget.unlearning_attempt import MaskReply, MaskRound, run_attempt
from fedforget.verify import model_hash  # noqa: F401 - receipts' hash, re-exported
from protocol import messages as wire
from protocol.codec import record_nbytes, samples_to_record
from protocol.replies import ProtocolError, decode_unlearn
from server.attempt import Attempt, new_cost
from server.console import RoundTable
from server.evaluator import QUERY_TIMEOUT_S, KnownRequest, message_config
from server.exchange import exchange
from server.server_methods import SERVER_METHODS, run_server_method
from server.validation import parameter_names, validate_mask


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


class GridTransport:
    """The attempt's transport over the Flower Grid (module docstring)."""

    def __init__(self, attempt: Attempt, by_node: dict[int, list[KnownRequest]]) -> None:
        self.attempt, self.by_node = attempt, by_node
        self.trainable = parameter_names(attempt.run.model)
        self.started = time.perf_counter()
        self.cost = new_cost()
        run = attempt.run
        lent = steer_reference(
            run.dataset.x_train,
            run.dataset.y_train,
            run.split.aux_ids,
            run_seed=run.config.seed,
            limit=run.config.steer_reference_samples,
        )
        self.steer_reference = samples_to_record(lent) if len(lent[1]) else None

    def ask_for_masks(
        self,
        state: dict[str, torch.Tensor],
        owners: Sequence[int],
        *,
        unlearn_round: int,
        guards: Mapping[int, Mapping[str, float]],
    ) -> MaskRound[int]:
        attempt = self.attempt
        run, config = attempt.run, attempt.run.config
        self.started = time.perf_counter()
        arrays = ensure_array_record(state)
        messages = []
        for node_id in owners:
            msg_config = {
                **message_config(run, attempt.server_round),
                wire.REQUEST_IDS: [r.request_id for r in self.by_node[node_id]],
                "unlearn-method": config.unlearn_method,
                "unlearn-target": config.unlearn_target,
                "target-fr": config.target_fr,
                "forsaken-steps": config.forsaken_steps,
                **guards.get(node_id, {}),
            }
            content = RecordDict({wire.ARRAYS: arrays, wire.CONFIG: ConfigRecord(msg_config)})
            if self.steer_reference is not None:
                content[wire.STEER_REFERENCE] = self.steer_reference
            messages.append(Message(content, dst_node_id=node_id, message_type=wire.UNLEARN))
        lent_bytes = record_nbytes(self.steer_reference) if self.steer_reference is not None else 0
        bytes_down = (record_nbytes(arrays) + lent_bytes) * len(messages)
        run.record.append_metrics(
            {
                "round": attempt.server_round,
                "phase": "unlearn",
                "event": "unlearn-round-sent",
                "sending-round": unlearn_round,
                "nodes": sorted(owners),
            }
        )
        got = exchange(attempt.grid, messages, QUERY_TIMEOUT_S)
        replies: dict[int, MaskReply] = {}
        failures = {node: f"client error: {reason[-300:]}" for node, reason in got.failures.items()}
        bytes_up = 0
        for node, reply in got.replies.items():
            try:
                answer = decode_unlearn(reply)
                partition = self.by_node[node][0].partition_id
                if answer.partition != partition:
                    raise ProtocolError(
                        f"answers for partition {answer.partition}, asked partition {partition}"
                    )
            except ProtocolError as error:
                failures[node] = str(error)
                continue
            replies[node] = MaskReply(answer.mask, answer.metrics)
            bytes_up += answer.nbytes
        self.cost["bytes-sent"] += float(bytes_down + bytes_up)
        return MaskRound(replies, failures, {"bytes-down": bytes_down, "bytes-up": bytes_up})

    def validate(self, mask: Mapping[str, np.ndarray], state: dict[str, torch.Tensor]) -> None:
        validate_mask(mask, state, self.trainable, self.attempt.run.config.max_mask_ratio)

    def measure(self, state: dict[str, torch.Tensor], *, unlearn_round: int) -> dict[str, Any]:
        attempt = self.attempt
        arrays = ensure_array_record(state)
        self.cost["unlearn-seconds"] += time.perf_counter() - self.started
        row = {
            "round": attempt.server_round,
            "phase": "unlearn",
            "method": attempt.run.config.unlearn_method,
            "request-ids": attempt.request_ids,
            **attempt.evaluate_global(attempt.run, arrays),
        }
        row.update(attempt.evaluator.measure(attempt.grid, arrays, attempt.server_round))
        return row

    def log(self, row: dict[str, Any], *, event: str | None = None) -> None:
        attempt = self.attempt
        record, table = attempt.run.record, attempt.table
        if event == "mask-rejected":
            _log_rejection(record, table, attempt.server_round, int(row["node"]), str(row["reason"]))
        elif event == "unlearning-stalled":
            record.append_metrics(
                {
                    "round": attempt.server_round,
                    "phase": "unlearn",
                    "event": "unlearning-stalled",
                    "unlearn-round": row["unlearn-round"],
                }
            )
            table.print_event(f"unlearning round {row['unlearn-round']} changed nothing: no further rounds")
        else:
            row["seconds"] = time.perf_counter() - self.started
            self.cost["client-seconds"] += float(row.get("client-seconds", 0.0))
            record.append_metrics(row)
            table.print_row({**row, "phase": f"unlearn{row['unlearn-round']}"})


def run_unlearning(attempt: Attempt, arrays: ArrayRecord) -> UnlearningResult:
    """One unlearning attempt for ``attempt.requests`` (module docstring), tolerant of nodes that die
    or send bad masks: a failed node's requests are returned as not done, nothing of it in the model.
    Server-side methods (finetune, retrain, federaser) run FedAvg rounds through ``train_round``
    (``server/server_methods.py``)."""
    requests = attempt.requests
    if attempt.run.config.unlearn_method in SERVER_METHODS:
        model, failed_nodes, last, cost = run_server_method(attempt, arrays)
        for r in requests:
            if r.node_id in failed_nodes:
                r.outcome, r.before = "pending", None
        done = [r for r in requests if r.node_id not in failed_nodes]
        return UnlearningResult(model, done, failed_nodes, last, cost)
    by_node: dict[int, list[KnownRequest]] = {}
    for r in requests:
        by_node.setdefault(r.node_id, []).append(r)
    transport = GridTransport(attempt, by_node)
    result = run_attempt(
        transport,
        state_before=arrays.to_torch_state_dict(),
        owners=list(by_node),
        rounds=attempt.run.config.unlearn_rounds,
    )
    for node in result.failed:
        for r in by_node[node]:
            r.outcome, r.before = "pending", None
    done = [r for node in result.done for r in by_node[node]]
    last = dict(result.last)
    return UnlearningResult(ensure_array_record(result.state), done, result.failed, last, transport.cost)


def _log_rejection(record: Any, table: RoundTable, server_round: int, node: int, reason: str) -> None:
    record.append_metrics(
        {"round": server_round, "phase": "unlearn", "event": "mask-rejected", "node": node, "reason": reason}
    )
    table.print_event(f"mask from node {node} rejected: {reason}")


def ensure_array_record(state: Mapping[str, torch.Tensor]) -> ArrayRecord:
    return ArrayRecord({k: Array(v.detach().cpu().numpy()) for k, v in state.items()})
