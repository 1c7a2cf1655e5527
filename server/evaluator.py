"""The server's forgetting-rate evaluator.

* **Oracle**: trained once, when the first withdrawal request arrives, from shadow models on the
  server's auxiliary data (``oracle``, ``num-shadows``, ``shadow-epochs`` in the run config; same
  architecture and recipe as the global model). Its attack strength on the shadows' own in/out data
  is logged.
* **Requests**: each round the server asks every client for its withdrawal requests
  (``query.requests``); a new request is logged in ``withdrawals.json`` with its global ids.
* **Before**: for a new request the owning client judges its forget set on the model *before*
  unlearning (``query.membership``): B_T members, B_F non-members.
* **Every round after**: the owner judges the forget set again on the new global model (A_F
  non-members); FR = (A_F - B_F) / B_T (``fedforget.metrics.forgetting_rate``), with the forget,
  retain and reference accuracies and the attack AUC, goes into the round's metrics row.

Raw samples never leave a client: the server sends the oracle (numbers) and the model, the client
answers with per-sample decisions by global id and aggregate numbers.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from clients.codec import oracle_to_records
from fedforget import models
from fedforget.metrics import forgetting_rate
from fedforget.mia import MembershipOracle, fit_oracle
from server.setup import PreparedRun

QUERY_TIMEOUT_S = 3600.0


class EvaluatorError(RuntimeError):
    """A client did not answer a query the evaluator needs."""


@dataclasses.dataclass
class KnownRequest:
    """A withdrawal request as the server knows it."""

    request_id: str
    partition_id: int
    node_id: int
    grain: str
    round: int
    ids: np.ndarray
    before: dict[int, bool] | None = None
    outcome: str = "pending"
    rounds_measured: list[int] = dataclasses.field(default_factory=list)
    receipt: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "request-id": self.request_id,
            "client": self.partition_id,
            "grain": self.grain,
            "requested-round": self.round,
            "num-ids": len(self.ids),
            "global-ids": self.ids.tolist(),
            "rounds": self.rounds_measured,
            "outcome": self.outcome,
            "receipt": self.receipt,
        }


class ForgettingEvaluator:
    """Discovers withdrawal requests and measures the forgetting rate of the global model."""

    def __init__(self, run: PreparedRun) -> None:
        self.run = run
        self.requests: dict[str, KnownRequest] = {}
        self._oracle: MembershipOracle | None = None

    # ------------------------------------------------------------------ oracle
    def oracle(self) -> MembershipOracle:
        """The membership oracle, trained on first use and then reused."""
        if self._oracle is None:
            config, dataset = self.run.config, self.run.dataset
            aux = self.run.split.aux_ids
            start = time.perf_counter()
            self._oracle = fit_oracle(
                config.oracle,
                self._model_factory,
                dataset.x_train[aux],
                dataset.y_train[aux],
                num_shadows=config.num_shadows,
                epochs=config.effective_shadow_epochs,
                learning_rate=config.learning_rate,
                batch_size=config.batch_size,
                momentum=config.momentum,
                weight_decay=config.weight_decay,
                seed=config.seed,
            )
            self.run.record.append_metrics(
                {
                    "phase": "oracle",
                    "event": "oracle-trained",
                    "oracle": config.oracle,
                    "num-shadows": config.num_shadows,
                    "shadow-epochs": config.effective_shadow_epochs,
                    "aux-samples": len(aux),
                    "threshold": self._oracle.threshold,
                    "seconds": time.perf_counter() - start,
                }
            )
        return self._oracle

    def _model_factory(self):  # noqa: ANN202 - Callable[[], nn.Module]
        return models.build_model(self.run.config.model, self.run.dataset.info)

    def message_config(self, server_round: int) -> dict[str, Any]:
        return message_config(self.run, server_round)

    # ------------------------------------------------------------------ requests
    def poll(self, grid: Grid, server_round: int) -> list[KnownRequest]:
        """Ask every client for its requests; return the ones the server did not know yet."""
        node_ids = list(grid.get_node_ids())
        content = RecordDict({"config": ConfigRecord(self.message_config(server_round))})
        messages = [
            Message(content, dst_node_id=n, message_type=f"{MessageType.QUERY}.requests") for n in node_ids
        ]
        new: list[KnownRequest] = []
        for reply in _checked(grid.send_and_receive(messages, timeout=QUERY_TIMEOUT_S), "query.requests"):
            summary, ids = reply.content["requests"], reply.content["ids"]
            partition = int(summary["partition-id"])
            for rid, grain, state in zip(
                summary["request-ids"], summary["grains"], summary["states"], strict=True
            ):
                if rid in self.requests or state == "rejected":
                    continue
                known = KnownRequest(
                    str(rid),
                    partition,
                    reply.metadata.src_node_id,
                    str(grain),
                    server_round,
                    np.asarray(ids[rid], dtype=np.int64),
                )
                self.requests[known.request_id] = known
                new.append(known)
        if new:
            self.write_withdrawals()
        return new

    def write_withdrawals(self) -> None:
        self.run.record.write_json(
            "withdrawals.json", {"requests": [r.to_json() for r in self.requests.values()]}
        )

    def send_receipts(self, grid: Grid, server_round: int, requests: list[KnownRequest]) -> None:
        """Tell each owning device its requests are done (``query.receipt``); it stores the receipt."""
        messages = []
        for r in requests:
            receipt = {k: v for k, v in (r.receipt or {}).items() if v is not None}
            content = RecordDict(
                {
                    "config": ConfigRecord(
                        {
                            **self.message_config(server_round),
                            "request-ids": [r.request_id],
                            "outcome": r.outcome,
                        }
                    ),
                    "receipt": ConfigRecord(receipt),
                }
            )
            messages.append(
                Message(content, dst_node_id=r.node_id, message_type=f"{MessageType.QUERY}.receipt")
            )
        _checked(grid.send_and_receive(messages, timeout=QUERY_TIMEOUT_S), "query.receipt")

    # ------------------------------------------------------------------ measuring
    def query(
        self, grid: Grid, arrays: ArrayRecord, server_round: int, requests: Iterable[KnownRequest]
    ) -> dict[str, Any]:
        """Membership decisions + metrics of the given requests, grouped per owning client."""
        oracle_arrays, oracle_config = oracle_to_records(self.oracle())
        by_node: dict[int, list[KnownRequest]] = {}
        for r in requests:
            by_node.setdefault(r.node_id, []).append(r)
        messages = []
        for node_id, items in by_node.items():
            content = RecordDict(
                {
                    "model": arrays,
                    "oracle": oracle_arrays,
                    "oracle-config": oracle_config,
                    "config": ConfigRecord(
                        {**self.message_config(server_round), "request-ids": [r.request_id for r in items]}
                    ),
                }
            )
            messages.append(
                Message(content, dst_node_id=node_id, message_type=f"{MessageType.QUERY}.membership")
            )
        decisions: dict[int, bool] = {}
        metrics: dict[str, list[tuple[float, float]]] = {}
        for reply in _checked(grid.send_and_receive(messages, timeout=QUERY_TIMEOUT_S), "query.membership"):
            got = reply.content["decisions"]
            decisions.update({int(i): bool(m) for i, m in zip(got["ids"], got["member"], strict=True)})
            client_metrics = reply.content["metrics"]
            weight = float(client_metrics["num-forget"])
            for key in ("forget-accuracy", "retain-accuracy", "reference-accuracy", "attack-auc"):
                metrics.setdefault(key, []).append((float(client_metrics[key]), weight))
        averaged = {k: _weighted(v) for k, v in metrics.items()}
        return {"decisions": decisions, **averaged}

    def record_before(
        self, grid: Grid, arrays: ArrayRecord, server_round: int, new: list[KnownRequest]
    ) -> dict[str, Any]:
        """Judge new requests' forget sets on the model before unlearning (B_T / B_F)."""
        result = self.query(grid, arrays, server_round, new)
        for r in new:
            r.before = {int(i): result["decisions"][int(i)] for i in r.ids}
        members = sum(sum(r.before.values()) for r in new if r.before)
        total = sum(len(r.ids) for r in new)
        self.write_withdrawals()
        return {
            "b-t": members,
            "b-f": total - members,
            **{k: v for k, v in result.items() if k != "decisions"},
        }

    def measure(self, grid: Grid, arrays: ArrayRecord, server_round: int) -> dict[str, Any]:
        """FR and accuracies over every known request, on the current global model."""
        active = [r for r in self.requests.values() if r.before is not None]
        if not active:
            return {}
        result = self.query(grid, arrays, server_round, active)
        before = {i: m for r in active for i, m in (r.before or {}).items()}
        after = {i: result["decisions"][i] for i in before}
        fr = forgetting_rate(before, after)
        for r in active:
            if server_round not in r.rounds_measured:
                r.rounds_measured.append(server_round)
        self.write_withdrawals()
        return {
            "fr": fr.fr,
            "b-t": fr.b_t,
            "b-f": fr.b_f,
            "a-f": fr.a_f,
            "num-forget": fr.n,
            **{k: v for k, v in result.items() if k != "decisions"},
        }


def message_config(run: PreparedRun, server_round: int) -> dict[str, Any]:
    """What every message to a client carries: the round, the resolved model and the run id."""
    return {"server-round": server_round, "model": run.config.model, "run-id": run.config.run_id}


def _weighted(values: list[tuple[float, float]]) -> float:
    finite = [(v, w) for v, w in values if np.isfinite(v)]
    total = sum(w for _, w in finite)
    return float(sum(v * w for v, w in finite) / total) if total else float("nan")


def _checked(replies: Iterable[Message], what: str) -> list[Message]:
    replies = list(replies)
    errors = [m for m in replies if m.has_error()]
    if errors:
        reasons = "; ".join(sorted({m.error.reason.strip().splitlines()[-1][:300] for m in errors}))
        raise EvaluatorError(f"{what}: {len(errors)} of {len(replies)} clients failed: {reasons}")
    return replies
