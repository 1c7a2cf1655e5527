"""The server's round loop: FedAvg training rounds through ``flwr.serverapp.strategy.FedAvg``.

Each round: ask every device for withdrawal requests (and unlearn the open ones, or re-send
receipts), sample clients, send the global model (``train`` messages), validate every update
(``server/validation.py``) and aggregate the accepted ones with FedAvg (weighted by
``num-examples``), evaluate the new global model on the test split on the server, append a row to
``metrics.jsonl``, print it, and write the resume point (``resume.pt``: model, round, unlearnings
held). A round in which no client succeeds stops the run with an error (Flower then marks the run
as failed). A resumed run (``resume = 1``) first reconciles the ledger with ``resume.pt`` and then
continues with the round after the one it holds.
"""

from __future__ import annotations

import time
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from fedforget import training
from server.console import RoundTable
from server.evaluator import ForgettingEvaluator, message_config
from server.ledger import Key
from server.requests import deliver_receipts, handle_withdrawals
from server.setup import PreparedRun
from server.unlearning import model_hash
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


def evaluate_global(run: PreparedRun, arrays: ArrayRecord) -> dict[str, float]:
    """Test loss and accuracy of the global model, on the server."""
    run.model.load_state_dict(arrays.to_torch_state_dict())
    result = training.evaluate(run.model, run.dataset.x_test, run.dataset.y_test)
    return {"test-accuracy": result.accuracy, "test-loss": result.loss}


def _start(run: PreparedRun, table: RoundTable) -> tuple[int, ArrayRecord, dict[Key, dict[str, Any]]]:
    """The first round to run, the model to start from and the unlearnings it holds."""
    record = run.record
    if run.resume is None:
        arrays = ArrayRecord(run.model.state_dict())
        row = {"round": 0, "phase": "init", **evaluate_global(run, arrays)}
        record.append_metrics(row)
        table.print_row(row)
        record.save_checkpoint(0, run.model.state_dict())
        record.save_resume_point(0, run.model.state_dict(), {})
        return 1, arrays, {}
    point = run.resume
    fixed = run.ledger.reconcile(point.applied, point.round + 1)
    arrays = ArrayRecord(point.state)
    row = {
        "round": point.round,
        "phase": "resume",
        "event": "run-resumed",
        **evaluate_global(run, arrays),
        "model-hash": model_hash(point.state),
        "applied": [f"{p}:{r}" for p, r in sorted(point.applied)],
        "rolled-forward": [f"{p}:{r}" for p, r in fixed["rolled-forward"]],
        "rolled-back": [f"{p}:{r}" for p, r in fixed["rolled-back"]],
    }
    record.append_metrics(row)
    table.print_event(f"resumed after round {point.round} from {record.path / 'resume.pt'}")
    return point.round + 1, arrays, dict(point.applied)


def run_federated_training(grid: Grid, run: PreparedRun) -> ArrayRecord:
    """Run FedAvg rounds up to ``num-rounds`` (from round 1, or after the resume point)."""
    config, record = run.config, run.record
    strategy = make_strategy(run)
    table = RoundTable(record.path)
    first, arrays, applied = _start(run, table)
    # Devices can receive withdrawal requests at any time: the server asks every round.
    evaluator = ForgettingEvaluator(run)
    if run.resume is not None:
        evaluator.sync_with_ledger()

    for server_round in range(first, config.num_rounds + 1):
        start = time.perf_counter()
        poll = evaluator.poll(grid, server_round)
        if poll.delivered:
            run.ledger.mark_delivered([r.key for r in poll.delivered], server_round)
        deliver_receipts(grid, run, evaluator, server_round, poll.resend)
        if poll.todo:
            arrays = handle_withdrawals(
                grid, run, evaluator, arrays, server_round, poll.todo, table, applied, evaluate_global
            )
        train_config = ConfigRecord(message_config(run, server_round))
        replies = list(
            grid.send_and_receive(
                messages=strategy.configure_train(server_round, arrays, train_config, grid),
                timeout=REPLY_TIMEOUT_S,
            )
        )
        replies = _checked_updates(run, arrays, replies, server_round, table)
        failures = [m for m in replies if m.has_error()]
        new_arrays, train_metrics = strategy.aggregate_train(server_round, replies)
        if new_arrays is None:
            raise RoundFailedError(_failure_text(server_round, failures, len(replies)))
        arrays = new_arrays
        row = {
            "round": server_round,
            "phase": "train",
            **evaluate_global(run, arrays),
            "train-loss": float(train_metrics["train-loss"]) if train_metrics else float("nan"),
            "clients": len(replies) - len(failures),
            "failures": len(failures),
        }
        row.update(evaluator.measure(grid, arrays, server_round))
        row["seconds"] = time.perf_counter() - start
        record.append_metrics(row)
        table.print_row(row)
        state = arrays.to_torch_state_dict()
        record.save_resume_point(server_round, state, applied)
        last = server_round == config.num_rounds
        if last or (config.checkpoint_every and server_round % config.checkpoint_every == 0):
            record.save_checkpoint(server_round, state)

    record.append_metrics({"round": config.num_rounds, "phase": "done", "event": "run-finished"})
    table.print_footer()
    return arrays


def _checked_updates(
    run: PreparedRun, arrays: ArrayRecord, replies: list[Message], server_round: int, table: RoundTable
) -> list[Message]:
    """Replace every update that fails validation by an error reply (logged; never aggregated)."""
    from flwr.app import Error

    state = arrays.to_torch_state_dict()
    trainable = parameter_names(run.model)
    max_examples = max(len(c.train_ids) for c in run.split.clients)
    checked = []
    for reply in replies:
        if not reply.has_error():
            try:
                update = {k: reply.content["arrays"][k].numpy() for k in reply.content["arrays"]}
                num = float(reply.content["metrics"]["num-examples"])
                validate_update(update, state, trainable, run.config.max_update_ratio, num, max_examples)
            except (UpdateRejected, KeyError, TypeError, ValueError) as error:
                node = reply.metadata.src_node_id
                reason = str(error) if isinstance(error, UpdateRejected) else f"malformed reply: {error!r}"
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
    from flwr.app import RecordDict

    stub = Message(
        RecordDict(), dst_node_id=reply.metadata.src_node_id, message_type=reply.metadata.message_type
    )
    stub.metadata.__dict__["_message_id"] = reply.metadata.reply_to_message_id
    return stub


def _failure_text(server_round: int, failures: list[Message], num_replies: int) -> str:
    reasons = "; ".join(sorted({(m.error.reason.strip().splitlines() or ["?"])[-1][:300] for m in failures}))
    return f"round {server_round}: no usable client update ({num_replies} replies). Client errors: {reasons}"
