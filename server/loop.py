"""The server's round loop: FedAvg training rounds through ``flwr.serverapp.strategy.FedAvg``.

Each round: sample clients, send the global model (``train`` messages), aggregate the replies with
FedAvg (weighted by ``num-examples``), evaluate the new global model on the test split on the server,
append a row to ``metrics.jsonl``, print it, and checkpoint. A round in which no client succeeds
stops the run with an error (Flower then marks the run as failed).
"""

from __future__ import annotations

import time

from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from fedforget import training
from server.console import RoundTable
from server.evaluator import ForgettingEvaluator, KnownRequest, message_config
from server.setup import PreparedRun
from server.unlearning import model_hash, run_unlearning, target_met

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


def run_federated_training(grid: Grid, run: PreparedRun) -> ArrayRecord:
    """Run ``num-rounds`` FedAvg rounds from the run's initial model; returns the final model."""
    config, record = run.config, run.record
    strategy = make_strategy(run)
    table = RoundTable(record.path)
    arrays = ArrayRecord(run.model.state_dict())
    row = {"round": 0, "phase": "init", **evaluate_global(run, arrays)}
    record.append_metrics(row)
    table.print_row(row)
    record.save_checkpoint(0, run.model.state_dict())

    # Devices can receive withdrawal requests at any time: the server asks every round.
    evaluator = ForgettingEvaluator(run)

    for server_round in range(1, config.num_rounds + 1):
        start = time.perf_counter()
        new = evaluator.poll(grid, server_round)
        if new:
            arrays = handle_withdrawals(grid, run, evaluator, arrays, server_round, new, table)
        train_config = ConfigRecord(message_config(run, server_round))
        replies = list(
            grid.send_and_receive(
                messages=strategy.configure_train(server_round, arrays, train_config, grid),
                timeout=REPLY_TIMEOUT_S,
            )
        )
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
        last = server_round == config.num_rounds
        if last or (config.checkpoint_every and server_round % config.checkpoint_every == 0):
            record.save_checkpoint(server_round, arrays.to_torch_state_dict())

    record.append_metrics({"round": config.num_rounds, "phase": "done", "event": "run-finished"})
    table.print_footer()
    return arrays


def handle_withdrawals(
    grid: Grid,
    run: PreparedRun,
    evaluator: ForgettingEvaluator,
    arrays: ArrayRecord,
    server_round: int,
    new: list[KnownRequest],
    table: RoundTable,
) -> ArrayRecord:
    """Measure B on the model before unlearning, run the unlearning rounds, send receipts."""
    record = run.record
    before = evaluator.record_before(grid, arrays, server_round, new)
    accuracy_before = evaluate_global(run, arrays)
    event = {
        "round": server_round - 1,
        "phase": "withdrawal",
        "event": "request-received",
        "request-ids": [r.request_id for r in new],
        "num-forget": sum(len(r.ids) for r in new),
        **accuracy_before,
        **before,
    }
    record.append_metrics(event)
    table.print_event(
        f"withdrawal {', '.join(r.request_id for r in new)}: {event['num-forget']} samples; "
        f"oracle judges {before['b-t']} member / {before['b-f']} non-member before unlearning"
    )
    state_before = arrays.to_torch_state_dict()
    if "before-unlearning" not in record.named_checkpoints():
        record.save_named_checkpoint("before-unlearning", state_before)
    arrays = run_unlearning(grid, run, evaluator, arrays, server_round, new, table, evaluate_global)
    state_after = arrays.to_torch_state_dict()
    record.save_named_checkpoint("after-unlearning", state_after)
    measured = [row for row in record.metrics() if row.get("phase") == "unlearn" and "unlearn-round" in row]
    last = measured[-1] if measured else {}
    met = target_met(run.config.unlearn_target, run.config.target_fr, last)
    receipt = {
        "round": server_round,
        "unlearn-rounds": int(last.get("unlearn-round", 0)),
        "method": run.config.unlearn_method,
        "target": run.config.unlearn_target,
        "target-met": met,
        "fr": last.get("fr"),
        "b-t": before["b-t"],
        "b-f": before["b-f"],
        "a-f": last.get("a-f"),
        "test-accuracy-before": accuracy_before["test-accuracy"],
        "test-accuracy-after": last.get("test-accuracy"),
        "model-hash-before": model_hash(state_before),
        "model-hash-after": model_hash(state_after),
    }
    for request in new:
        request.outcome = "unlearned" if met else "unlearned-below-target"
        request.receipt = receipt
    evaluator.send_receipts(grid, server_round, new)
    evaluator.write_withdrawals()
    return arrays


def _failure_text(server_round: int, failures: list[Message], num_replies: int) -> str:
    reasons = "; ".join(sorted({m.error.reason.strip().splitlines()[-1][:300] for m in failures}))
    return f"round {server_round}: no usable client update ({num_replies} replies). Client errors: {reasons}"
