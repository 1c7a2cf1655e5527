"""One unlearning attempt: what every stage of it shares, and how each of its rounds is recorded."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
from flwr.app import ArrayRecord
from flwr.serverapp import Grid

from server.console import RoundTable
from server.evaluator import ForgettingEvaluator, KnownRequest
from server.setup import PreparedRun

__all__ = ["Attempt", "EvaluateGlobal", "TrainRound", "change_l2", "new_cost"]

TrainRound = Callable[[ArrayRecord, int], tuple[ArrayRecord, dict[str, Any]]]
"""``train_round(model, numbered_round) -> (new model, its numbers)`` (``server/rounds.py``)."""

EvaluateGlobal = Callable[[PreparedRun, ArrayRecord], dict[str, float]]
"""``evaluate_global(run, model) -> {"test-accuracy", "test-loss"}`` (``server/loop.py``)."""


def new_cost() -> dict[str, float]:
    """An attempt's cost, summed over its rounds (the receipt's ``cost-*`` fields)."""
    return {"client-seconds": 0.0, "bytes-sent": 0.0, "unlearn-seconds": 0.0}


def change_l2(before: Mapping[str, torch.Tensor], after: Mapping[str, torch.Tensor]) -> float:
    """``||w_after - w_before||_2`` over the floating entries."""
    total = 0.0
    for name, value in before.items():
        if value.is_floating_point():
            total += float((after[name].double() - value.double()).square().sum())
    return math.sqrt(total)


@dataclasses.dataclass
class Attempt:
    """The context of one unlearning attempt for ``requests`` before training round ``server_round``."""

    grid: Grid
    run: PreparedRun
    evaluator: ForgettingEvaluator
    server_round: int
    requests: list[KnownRequest]
    table: RoundTable
    evaluate_global: EvaluateGlobal
    train_round: TrainRound | None = None
    """One FedAvg round through the federation (what the server-side methods run)."""

    @property
    def request_ids(self) -> list[str]:
        return [r.request_id for r in self.requests]

    @property
    def nodes(self) -> list[int]:
        return sorted({r.node_id for r in self.requests})

    def record_server_round(
        self,
        model: ArrayRecord,
        state_before: Mapping[str, torch.Tensor],
        unlearn_round: int,
        started: float,
        cost: dict[str, float],
        round_numbers: Mapping[str, Any],
        fields: Mapping[str, Any],
    ) -> dict[str, Any]:
        """Count a server-side unlearning round's cost, then evaluate, measure FR, log and print its row.

        ``round_numbers``: what the federation round reported (clients, failures, bytes, client
        seconds); ``fields``: the method's own columns. The cost's seconds end here (no evaluation).
        """
        run, method = self.run, self.run.config.unlearn_method
        seconds = time.perf_counter() - started
        client_seconds = float(round_numbers.get("client-seconds", 0.0))
        cost["client-seconds"] += client_seconds
        cost["bytes-sent"] += float(round_numbers.get("bytes-down", 0) + round_numbers.get("bytes-up", 0))
        cost["unlearn-seconds"] += seconds
        row: dict[str, Any] = {
            "round": self.server_round,
            "phase": "unlearn",
            "unlearn-round": unlearn_round,
            "method": method,
            "request-ids": self.request_ids,
            **self.evaluate_global(run, model),
            **fields,
            "clients": round_numbers.get("clients", 0),
            "failures": round_numbers.get("failures", 0),
            "model-change-l2": change_l2(state_before, model.to_torch_state_dict()),
            "bytes-down": round_numbers.get("bytes-down", 0),
            "bytes-up": round_numbers.get("bytes-up", 0),
            "client-seconds": client_seconds,
        }
        row.update(self.evaluator.measure(self.grid, model, self.server_round))
        row["seconds"] = time.perf_counter() - started
        run.record.append_metrics(row)
        self.table.print_row({**row, "phase": f"{method}{unlearn_round}"})
        return row
