"""One FedAvg training round on the server, shared by the round loop and the server-side baselines.

:func:`train_round`: send the global model to the sampled clients (``train`` messages), validate
every update (``server/validation.py``; a rejected one is logged and replaced by an error reply),
aggregate the accepted ones with FedAvg (weighted by ``num-examples``). Clients never train on their
tombstoned (withdrawn) samples, so a round run after a withdrawal is a round on the remaining data.
A round in which no client succeeds raises :class:`RoundFailedError`; a round whose accepted updates
all report 0 examples leaves the model as it was (event ``round-without-data``).

Every reply is decoded first (:func:`protocol.replies.decode_train`); one that does not decode, or
names a partition bound to another node (``server/ledger.py``), is rejected like an invalid update.
An accepted reply reaches FedAvg rebuilt from what was decoded: its ``arrays`` and the four metrics
of the protocol, nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from protocol import messages as wire
from protocol.replies import ProtocolError, decode_train
from server.console import RoundTable
from server.evaluator import message_config
from server.setup import PreparedRun
from server.validation import UpdateRejected, parameter_names, validate_update

REPLY_TIMEOUT_S = 3600.0


class RoundFailedError(RuntimeError):
    """No client returned a usable update in a round."""


def make_strategy(run: PreparedRun) -> FedAvg:
    """FedAvg sampling ``clients-per-round`` of ``num-clients`` clients; no federated evaluation."""
    config = run.config
    per_round = config.effective_clients_per_round
    return FedAvg(
        fraction_train=per_round / config.num_clients,
        fraction_evaluate=0.0,
        min_train_nodes=per_round,
        min_available_nodes=config.num_clients,
    )


def train_round(
    grid: Grid,
    run: PreparedRun,
    strategy: FedAvg,
    arrays: ArrayRecord,
    server_round: int,
    table: RoundTable,
    keep: Callable[[dict[int, tuple[dict[str, np.ndarray], float]]], None] | None = None,
) -> tuple[ArrayRecord, dict[str, Any]]:
    """One FedAvg round from ``arrays``; returns the new model and ``train-loss``, ``clients``,
    ``failures``, ``bytes-down`` / ``bytes-up`` (models sent / accepted updates received) and
    ``client-seconds`` (summed over the clients whose update was accepted).

    ``server_round`` numbers the round for the clients (their training seed and the withdrawal
    schedule entries due). Raises :class:`RoundFailedError` when no client returns a usable update.
    ``keep``, if given, gets every accepted update as ``partition id -> (state, num-examples)``
    (FedEraser's store).
    """
    train_config = ConfigRecord(message_config(run, server_round))
    messages = list(strategy.configure_train(server_round, arrays, train_config, grid))
    replies = list(grid.send_and_receive(messages=messages, timeout=REPLY_TIMEOUT_S))
    replies = _checked_updates(run, arrays, replies, server_round, table)
    failures = [m for m in replies if m.has_error()]
    good = [m for m in replies if not m.has_error()]
    if good and sum(_examples(m) for m in good) == 0:  # FedAvg would divide by a total weight of 0
        run.record.append_metrics(
            {"round": server_round, "phase": "fault", "event": "round-without-data", "clients": len(good)}
        )
        table.print_event(f"round {server_round}: every accepted update reports 0 examples; model unchanged")
        new_arrays, train_metrics = arrays, None
    else:
        new_arrays, train_metrics = strategy.aggregate_train(server_round, replies)
    if new_arrays is None:
        raise RoundFailedError(_failure_text(server_round, failures, len(replies)))
    if keep is not None:
        keep(client_states(good))
    size = sum(arrays[k].numpy().nbytes for k in arrays)
    row = {
        "train-loss": float(train_metrics["train-loss"]) if train_metrics else float("nan"),
        "clients": len(replies) - len(failures),
        "failures": len(failures),
        "bytes-down": size * len(messages),
        "bytes-up": size * len(good),
        "client-seconds": _client_seconds(good),
    }
    return new_arrays, row


def _examples(reply: Message) -> float:
    return float(reply.content[wire.METRICS][wire.NUM_EXAMPLES])


def _client_seconds(replies: list[Message]) -> float:
    return float(sum(float(m.content[wire.METRICS][wire.CLIENT_SECONDS]) for m in replies))


def client_states(replies: list[Message]) -> dict[int, tuple[dict[str, np.ndarray], float]]:
    """``partition id -> (returned state, num-examples)`` of accepted ``train`` replies (those
    :func:`_checked_updates` let through)."""
    out = {}
    for reply in replies:
        update = decode_train(reply)
        out[update.partition] = (update.state, float(update.num_examples))
    return out


def calibration_round(
    grid: Grid,
    run: PreparedRun,
    arrays: ArrayRecord,
    server_round: int,
    table: RoundTable,
    local_epochs: int,
) -> tuple[dict[int, tuple[dict[str, np.ndarray], float]], dict[str, Any]]:
    """Every live node trains ``local_epochs`` epochs from ``arrays`` (FedEraser's calibration).

    Updates are validated as in :func:`train_round`; returns the accepted ones by partition id
    (clients with no training data left are dropped) and ``bytes-down`` / ``bytes-up`` /
    ``client-seconds`` / ``clients`` / ``failures``. No aggregation: the caller calibrates.
    """
    config = ConfigRecord({**message_config(run, server_round), "local-epochs": local_epochs})
    messages = [
        Message(
            RecordDict({wire.ARRAYS: arrays, wire.CONFIG: config}), dst_node_id=node, message_type=wire.TRAIN
        )
        for node in grid.get_node_ids()
    ]
    replies = list(grid.send_and_receive(messages=messages, timeout=REPLY_TIMEOUT_S))
    replies = _checked_updates(run, arrays, replies, server_round, table)
    good = [m for m in replies if not m.has_error()]
    states = {pid: v for pid, v in client_states(good).items() if v[1] > 0}
    size = sum(arrays[k].numpy().nbytes for k in arrays)
    row = {
        "clients": len(states),
        "failures": len(replies) - len(good),
        "bytes-down": size * len(messages),
        "bytes-up": size * len(good),
        "client-seconds": _client_seconds(good),
    }
    return states, row


def _checked_updates(
    run: PreparedRun, arrays: ArrayRecord, replies: list[Message], server_round: int, table: RoundTable
) -> list[Message]:
    """Replace every reply that does not decode, claims another node's partition or fails validation
    by an error reply (logged as ``update-rejected``; never aggregated); rebuild every accepted one
    from its decoded content."""
    state = arrays.to_torch_state_dict()
    trainable = parameter_names(run.model)
    # With client-data=own the server knows no client's size: it trusts the authenticated device's count.
    max_examples = max((len(c.train_ids) for c in run.split.clients), default=2**62)
    checked = []
    for reply in replies:
        if not reply.has_error():
            node = reply.metadata.src_node_id
            try:
                update = decode_train(reply)
                bound = run.ledger.bound_node(update.partition)
                if bound is not None and bound != node:
                    raise UpdateRejected(
                        f"claims partition {update.partition}, which is bound to node {bound}"
                    )
                validate_update(
                    update.state,
                    state,
                    trainable,
                    run.config.max_update_ratio,
                    update.num_examples,
                    max_examples,
                )
                reply.content = RecordDict(
                    {
                        wire.ARRAYS: reply.content[wire.ARRAYS],
                        wire.METRICS: MetricRecord(
                            {
                                wire.NUM_EXAMPLES: update.num_examples,
                                wire.TRAIN_LOSS: update.train_loss,
                                wire.CLIENT_SECONDS: update.client_seconds,
                                wire.PARTITION_ID: update.partition,
                            }
                        ),
                    }
                )
            except (ProtocolError, UpdateRejected) as error:
                reason = str(error)
                run.record.append_metrics(
                    {
                        "round": server_round,
                        "phase": "fault",
                        "event": "update-rejected",
                        "node": node,
                        "reason": reason,
                    }
                )
                table.print_event(f"update from node {node} rejected: {reason}")
                reply = Message(Error(code=0, reason=f"update rejected: {reason}"), reply_to=_stub(reply))
        checked.append(reply)
    return checked


def _stub(reply: Message) -> Message:
    """An instruction with the reply's routing, to build an error reply in the reply's place."""
    stub = Message(
        RecordDict(), dst_node_id=reply.metadata.src_node_id, message_type=reply.metadata.message_type
    )
    stub.metadata.__dict__["_message_id"] = reply.metadata.reply_to_message_id
    return stub


def _failure_text(server_round: int, failures: list[Message], num_replies: int) -> str:
    reasons = "; ".join(sorted({(m.error.reason.strip().splitlines() or ["?"])[-1][:300] for m in failures}))
    return f"round {server_round}: no usable client update ({num_replies} replies). Client errors: {reasons}"
