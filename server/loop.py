"""The server's round loop: FedAvg training rounds through ``flwr.serverapp.strategy.FedAvg``.

Each round: ask every device for withdrawal requests (and unlearn the open ones, or re-send
receipts), then one training round (``server/rounds.py``: sample clients, send the global model,
validate every update, aggregate the accepted ones with FedAvg), evaluate the new global model on
the test split on the server, append a row to ``metrics.jsonl``, print it, check the training's
health (``fedforget/training_health.py``: a diverging loss or a model collapsed onto the majority
class is a loud console warning and a ``health`` event row, once per kind until it recovers), and
write the resume point (``resume.pt``: model, round, unlearnings held). A round in which no client
succeeds stops the run with an error (Flower then marks the run as failed). A resumed run
(``resume = 1``) first reconciles the ledger with ``resume.pt`` and then continues with the round
after the one it holds.
"""

from __future__ import annotations

import time
from typing import Any

from flwr.app import ArrayRecord
from flwr.serverapp import Grid

from fedforget import training
from fedforget.training_health import HealthProblem, check_round, majority_rate
from server.console import RoundTable
from server.evaluator import ForgettingEvaluator
from server.ledger import Key
from server.requests import deliver_receipts, handle_withdrawals
from server.rounds import REPLY_TIMEOUT_S, RoundFailedError, make_strategy, train_round
from server.setup import PreparedRun
from server.unlearning import model_hash
from server.update_store import update_store

__all__ = [
    "REPLY_TIMEOUT_S",
    "RoundFailedError",
    "evaluate_global",
    "make_strategy",
    "run_federated_training",
]


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
    health = _HealthWatch(run, table)
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

            def fedavg_round(model: ArrayRecord, numbered: int) -> tuple[ArrayRecord, dict[str, Any]]:
                return train_round(grid, run, strategy, model, numbered, table)

            arrays = handle_withdrawals(
                grid,
                run,
                evaluator,
                arrays,
                server_round,
                poll.todo,
                table,
                applied,
                evaluate_global,
                fedavg_round,
            )
        keep = _federaser_keeper(run, arrays, server_round)
        arrays, trained = train_round(grid, run, strategy, arrays, server_round, table, keep)
        row = {
            "round": server_round,
            "phase": "train",
            **evaluate_global(run, arrays),
            "train-loss": trained["train-loss"],
            "clients": trained["clients"],
            "failures": trained["failures"],
        }
        row.update(evaluator.measure(grid, arrays, server_round))
        row["seconds"] = time.perf_counter() - start
        record.append_metrics(row)
        table.print_row(row)
        health.observe(row)
        state = arrays.to_torch_state_dict()
        record.save_resume_point(server_round, state, applied)
        last = server_round == config.num_rounds
        if last or (config.checkpoint_every and server_round % config.checkpoint_every == 0):
            record.save_checkpoint(server_round, state)

    record.append_metrics({"round": config.num_rounds, "phase": "done", "event": "run-finished"})
    table.print_footer()
    return arrays


class _HealthWatch:
    """Reports :func:`fedforget.training_health.check_round` problems: a console warning and a
    ``health`` row in ``metrics.jsonl`` when one appears (again after the training recovered)."""

    def __init__(self, run: PreparedRun, table: RoundTable) -> None:
        self.run, self.table = run, table
        self.majority = majority_rate(run.dataset.y_test)
        initial = [r for r in run.record.metrics() if r.get("phase") == "init"]
        self.initial_loss = float(initial[0]["test-loss"]) if initial else float("nan")
        self.last: HealthProblem | None = None

    def observe(self, row: dict[str, Any]) -> None:
        problem = check_round(
            server_round=int(row["round"]),
            train_loss=float(row["train-loss"]),
            test_accuracy=float(row["test-accuracy"]),
            initial_loss=self.initial_loss,
            majority=self.majority,
            learning_rate=self.run.config.learning_rate,
        )
        if problem is not None and (self.last is None or self.last.kind != problem.kind):
            self.run.record.append_metrics(
                {
                    "round": row["round"],
                    "phase": "health",
                    "event": problem.event,
                    "finding": problem.finding,
                    "advice": problem.advice,
                    "majority-rate": self.majority,
                }
            )
            self.table.print_warning(problem.text())
        self.last = problem


def _federaser_keeper(run: PreparedRun, arrays: ArrayRecord, server_round: int) -> Any:
    """With ``unlearn-method = federaser``, what stores this round's client updates (else None)."""
    store = update_store(run.record.path, run.config.federaser_every)
    if run.config.unlearn_method != "federaser" or not store.wants(server_round):
        return None
    sent = {k: arrays[k].numpy() for k in arrays}

    def keep(states: dict[int, tuple[dict[str, Any], float]]) -> None:
        store.save(
            server_round, sent, {p: s for p, (s, _) in states.items()}, {p: n for p, (_, n) in states.items()}
        )

    return keep
