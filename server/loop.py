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
from server.evaluator import ForgettingEvaluator, message_config
from server.setup import PreparedRun

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
        if evaluator is not None:
            new = evaluator.poll(grid, server_round)
            if new:
                # The model before unlearning: what the forget set's B_T / B_F are measured on.
                before = evaluator.record_before(grid, arrays, server_round, new)
                event = {
                    "round": server_round - 1,
                    "phase": "withdrawal",
                    "event": "request-received",
                    "request-ids": [r.request_id for r in new],
                    "num-forget": sum(len(r.ids) for r in new),
                    **evaluate_global(run, arrays),
                    **before,
                }
                record.append_metrics(event)
                table.print_event(
                    f"withdrawal {', '.join(r.request_id for r in new)}: {event['num-forget']} samples; "
                    f"oracle judges {before['b-t']} member / {before['b-f']} non-member before unlearning"
                )
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
        if evaluator is not None:
            row.update(evaluator.measure(grid, arrays, server_round))
        row["seconds"] = time.perf_counter() - start
        record.append_metrics(row)
        table.print_row(row)
        last = server_round == config.num_rounds
        if last or (config.checkpoint_every and server_round % config.checkpoint_every == 0):
            record.save_checkpoint(server_round, arrays.to_torch_state_dict())

    if evaluator is not None:
        for request in evaluator.requests.values():
            request.outcome = "tombstoned"  # excluded from all later training on its client
        evaluator.write_withdrawals()
    record.append_metrics({"round": config.num_rounds, "phase": "done", "event": "run-finished"})
    table.print_footer()
    return arrays


def _failure_text(server_round: int, failures: list[Message], num_replies: int) -> str:
    reasons = "; ".join(sorted({m.error.reason.strip().splitlines()[-1][:300] for m in failures}))
    return f"round {server_round}: no usable client update ({num_replies} replies). Client errors: {reasons}"
