"""The server's forgetting-rate evaluator.

* **Oracle**: trained once (``fedforget.mia.recipe.fit_oracle_for``, the recipe the benchmarks share),
  when the first withdrawal request arrives, from shadow models on the
  server's auxiliary data (``oracle``, ``num-shadows``, ``shadow-epochs`` in the run config; same
  architecture and recipe as the global model). Its attack strength on the shadows' own in/out data
  is logged.
* **Requests**: each round the server asks every client for its withdrawal requests
  (``query.requests``); a new request goes into the server's ledger (``server/ledger.py``) and is
  logged in ``withdrawals.json`` with its global ids.
* **Before**: for a new request the owning client judges its forget set on the model *before*
  unlearning (``query.membership``): B_T members, B_F non-members.
* **Every round after**: the owner judges the forget set again on the new global model (A_F
  non-members); FR = (A_F - B_F) / B_T (``fedforget.metrics.forgetting_rate``), with the forget,
  retain and reference accuracies and the attack AUC, goes into the round's metrics row.

The server sends the oracle (numbers) and the model; the client answers with the sample ids of its
forget set, the oracle's member / non-member decision for each, and aggregate numbers. No feature
vector or label is sent, but ids, per-sample decisions and (``train.unlearn``) masks do leave the
device, and a mask can reveal the samples it was computed from (``docs/privacy.md``).

Sample ids are global ids of the shared dataset (``client-data = shared``) or the device's own ids
(``client-data = own``); decisions are therefore keyed by ``(partition, id)``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from fedforget.client_data import model_input_config
from fedforget.metrics import forgetting_rate
from fedforget.mia import MembershipOracle
from fedforget.mia.recipe import fit_oracle_for
from protocol import messages as wire
from protocol.codec import oracle_to_records
from protocol.replies import ProtocolError, decode_membership, decode_receipt_ack, decode_requests
from server.exchange import exchange
from server.ledger import DELIVERED, RECEIVED, UNLEARNED, Key, ids_digest
from server.setup import PreparedRun

QUERY_TIMEOUT_S = 3600.0


@dataclasses.dataclass
class KnownRequest:
    """A withdrawal request as the server knows it (its durable state is in the ledger)."""

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

    @property
    def key(self) -> Key:
        return (self.partition_id, self.request_id)

    def to_json(self) -> dict[str, Any]:
        return {
            "request-id": self.request_id,
            "client": self.partition_id,
            "grain": self.grain,
            "requested-round": self.round,
            "num-ids": len(self.ids),
            "global-ids": self.ids.tolist(),
            "before-members": None if self.before is None else sorted(i for i, m in self.before.items() if m),
            "rounds": self.rounds_measured,
            "outcome": self.outcome,
            "receipt": self.receipt,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> KnownRequest:
        ids = np.asarray(doc["global-ids"], dtype=np.int64)
        members = doc.get("before-members")
        judged = None if members is None else {int(i) for i in members}
        before = None if judged is None else {int(i): int(i) in judged for i in ids}
        return cls(
            str(doc["request-id"]),
            int(doc["client"]),
            -1,
            str(doc["grain"]),
            int(doc["requested-round"]),
            ids,
            before,
            str(doc.get("outcome", "pending")),
            list(doc.get("rounds", [])),
            doc.get("receipt"),
        )


@dataclasses.dataclass
class Poll:
    """What one poll found: requests to unlearn now, and unlearned ones whose receipt the device lacks."""

    todo: list[KnownRequest]
    resend: list[KnownRequest]
    delivered: list[KnownRequest]


class ForgettingEvaluator:
    """Discovers withdrawal requests and measures the forgetting rate of the global model."""

    def __init__(self, run: PreparedRun) -> None:
        self.run = run
        self.requests: dict[Key, KnownRequest] = {}
        self._oracle: MembershipOracle | None = None
        self._ignored: set[Key] = set()
        path = run.record.path / "withdrawals.json"
        if run.resume is not None and path.exists():
            for doc in run.record.read_json("withdrawals.json")["requests"]:
                known = KnownRequest.from_json(doc)
                self.requests[known.key] = known

    # ------------------------------------------------------------------ oracle
    def oracle(self) -> MembershipOracle:
        """The membership oracle, trained on first use and then reused."""
        if self._oracle is None:
            config, dataset = self.run.config, self.run.dataset
            aux = self.run.split.aux_ids
            start = time.perf_counter()
            self._oracle = fit_oracle_for(config, dataset, self.run.split)
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

    def message_config(self, server_round: int) -> dict[str, Any]:
        return message_config(self.run, server_round)

    def reject_reply(self, server_round: int, what: str, node: int, reason: str) -> None:
        """A reply that broke the protocol (:class:`protocol.ProtocolError`) or names no partition of
        the run: one ``reply-rejected`` row; the node counts as failed this time."""
        self.run.record.append_metrics(
            {
                "round": server_round,
                "phase": "fault",
                "event": "reply-rejected",
                "what": what,
                "node": node,
                "reason": reason,
            }
        )

    def log_failures(self, server_round: int, what: str, failures: dict[int, str]) -> None:
        """One ``node-failed`` event per failed node (the run goes on; the node is asked again later)."""
        for node, reason in failures.items():
            self.run.record.append_metrics(
                {
                    "round": server_round,
                    "phase": "fault",
                    "event": "node-failed",
                    "what": what,
                    "node": node,
                    "reason": reason,
                }
            )

    # ------------------------------------------------------------------ requests
    def poll(self, grid: Grid, server_round: int) -> Poll:
        """Ask every node for its device's requests and sort them by what the ledger says.

        New requests are recorded in the ledger (``received``). ``received`` ones (new, or left open
        by a failed attempt) are to be unlearned now, by the node that holds the partition today.
        ``unlearned`` / ``receipt-delivered`` ones still ``pending`` on the device get their receipt
        again; ``unlearned`` ones the device has ``completed`` are marked delivered. A request the
        device completed in another run, or rejected, is left alone. Nodes that fail are skipped
        (asked again next round), and so are replies that do not decode
        (:func:`protocol.replies.decode_requests`) and replies naming a partition that is bound to
        another node (``claim-refused``; :meth:`server.ledger.Ledger.claim`): such a reply is read
        no further.
        """
        ledger = self.run.ledger
        node_ids = list(grid.get_node_ids())
        content = RecordDict({"config": ConfigRecord(self.message_config(server_round))})
        messages = [Message(content, dst_node_id=n, message_type=wire.QUERY_REQUESTS) for n in node_ids]
        got = exchange(grid, messages, QUERY_TIMEOUT_S)
        self.log_failures(server_round, "query.requests", got.failures)
        poll = Poll([], [], [])
        for node, reply in got.replies.items():
            try:
                reported = decode_requests(reply)
            except ProtocolError as error:
                self.reject_reply(server_round, wire.QUERY_REQUESTS, node, str(error))
                continue
            partition = reported.partition
            problem = self._no_such_partition(partition)
            if problem:
                self.reject_reply(server_round, wire.QUERY_REQUESTS, node, problem)
                continue
            if not self._claim(partition, node, server_round):
                continue
            for item in reported.requests:
                rid, grain, state, request_ids = item.request_id, item.grain, item.state, item.ids
                key = (partition, rid)
                entry = ledger.get(*key)
                if state == "rejected" or key in self._ignored:
                    continue
                if entry is None and state == "completed":
                    self._ignored.add(key)  # completed in another run: this model never trained on it
                    continue
                problem = self._not_its_own(partition, request_ids)
                if problem:
                    self._ignored.add(key)
                    self.log_failures(server_round, "query.requests", {node: f"request {rid!r}: {problem}"})
                    continue
                if entry is None:
                    entry = ledger.receive(partition, rid, grain, request_ids, server_round)
                elif entry.ids_sha256 != ids_digest(request_ids):
                    self._ignored.add(key)
                    self.log_failures(
                        server_round, "query.requests", {node: f"request {rid!r} changed its ids; ignored"}
                    )
                    continue
                known = self.requests.get(key)
                if known is None:
                    known = KnownRequest(rid, partition, node, grain, server_round, request_ids)
                    self.requests[key] = known
                known.node_id = node  # a rejoined device has a new node id
                if entry.state == RECEIVED:
                    poll.todo.append(known)
                elif entry.state in (UNLEARNED, DELIVERED):
                    known.outcome = entry.outcome or known.outcome
                    known.receipt = entry.receipt or known.receipt
                    if state == "pending":
                        poll.resend.append(known)
                    elif entry.state == UNLEARNED:
                        poll.delivered.append(known)
        if poll.todo:
            self.write_withdrawals()
        return poll

    def _claim(self, partition: int, node: int, server_round: int) -> bool:
        """Whether ``node`` may speak for ``partition`` (the ledger binds it to its first claimant);
        a refused claim is a ``claim-refused`` row."""
        bound = self.run.ledger.claim(partition, node, server_round)
        if bound == node:
            return True
        self.run.record.append_metrics(
            {
                "round": server_round,
                "phase": "fault",
                "event": "claim-refused",
                "node": node,
                "partition": partition,
                "bound-node": bound,
                "reason": (
                    f"node {node} claims partition {partition}, which is bound to node {bound}; "
                    "refused (a replaced device is re-bound with `fedforget rebind`)"
                ),
            }
        )
        return False

    def _no_such_partition(self, partition: int) -> str:
        """Why ``partition`` names no partition of this run ('' if it does)."""
        num = (
            self.run.config.num_clients
            if self.run.config.client_data == "own"
            else len(self.run.split.clients)
        )
        if not 0 <= partition < num:
            return f"partition {partition} does not exist (the run has {num}); ignored"
        return ""

    def _not_its_own(self, partition: int, ids: np.ndarray) -> str:
        """Why a request may not be accepted from ``partition`` ('' if it may): a client can only
        withdraw its own training samples (the split says which those are).

        With ``client-data = own`` the server holds no client data: it checks only the request's
        shape (non-empty, unique, non-negative ids) and trusts the authenticated device that the ids
        are its own training samples.
        """
        if ids.size == 0:
            return "names no samples; ignored"
        if self.run.config.client_data == "own":
            num_clients = self.run.config.num_clients
            if not 0 <= partition < num_clients:
                return f"partition {partition} outside [0, num-clients={num_clients}); ignored"
            if ids.min() < 0:
                return f"names negative ids (e.g. {ids[ids < 0][:3].tolist()}); ignored"
            if np.unique(ids).size != ids.size:
                return "names some ids twice; ignored"
            return ""
        clients = self.run.split.clients
        if not 0 <= partition < len(clients):
            return f"partition {partition} does not exist; ignored"
        foreign = np.setdiff1d(ids, clients[partition].train_ids)
        if foreign.size:
            return (
                f"names {foreign.size} ids that are not partition {partition}'s training samples "
                f"(e.g. {foreign[:3].tolist()}); a client can only withdraw its own data; ignored"
            )
        return ""

    def sync_with_ledger(self) -> None:
        """After a restart: outcome and receipt of every known request as the ledger has them."""
        for key, known in self.requests.items():
            entry = self.run.ledger.get(*key)
            if entry is None or entry.state == RECEIVED:
                known.outcome, known.before, known.receipt = "pending", None, None
            elif entry.state in (UNLEARNED, DELIVERED):
                known.outcome, known.receipt = entry.outcome, entry.receipt
        self.write_withdrawals()

    def write_withdrawals(self) -> None:
        self.run.record.write_json(
            "withdrawals.json", {"requests": [r.to_json() for r in self.requests.values()]}
        )

    def send_receipts(
        self, grid: Grid, server_round: int, requests: list[KnownRequest]
    ) -> list[KnownRequest]:
        """Tell each owning device its requests are done (``query.receipt``); it stores the receipt.

        Returns the requests whose device confirmed it stored the receipt (others are re-sent later).
        """
        by_node: dict[int, list[KnownRequest]] = {}
        for r in requests:
            by_node.setdefault(r.node_id, []).append(r)
        messages = []
        for node_id, items in by_node.items():
            # One message per node; the receipt is shared by requests unlearned together.
            first = items[0]
            receipt = {k: v for k, v in (first.receipt or {}).items() if v is not None}
            rest = [r for r in items if r.receipt == first.receipt and r.outcome == first.outcome]
            content = RecordDict(
                {
                    "config": ConfigRecord(
                        {
                            **self.message_config(server_round),
                            "request-ids": [r.request_id for r in rest],
                            "outcome": first.outcome,
                        }
                    ),
                    "receipt": ConfigRecord(receipt),
                }
            )
            messages.append(Message(content, dst_node_id=node_id, message_type=wire.QUERY_RECEIPT))
        got = exchange(grid, messages, QUERY_TIMEOUT_S)
        self.log_failures(server_round, wire.QUERY_RECEIPT, got.failures)
        confirmed = []
        for node, reply in got.replies.items():
            try:
                stored = set(decode_receipt_ack(reply).request_ids)
            except ProtocolError as error:
                self.reject_reply(server_round, wire.QUERY_RECEIPT, node, str(error))
                continue
            confirmed += [r for r in by_node[node] if r.request_id in stored]
        return confirmed

    # ------------------------------------------------------------------ measuring
    def query(
        self, grid: Grid, arrays: ArrayRecord, server_round: int, requests: Iterable[KnownRequest]
    ) -> dict[str, Any]:
        """Membership decisions + metrics of the given requests, grouped per owning client.

        Decisions of a node that failed, or whose reply did not decode
        (:func:`protocol.replies.decode_membership`: it must judge exactly the ids asked, for the
        requests' partition), are missing; ``failed-nodes`` lists such nodes.
        """
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
            messages.append(Message(content, dst_node_id=node_id, message_type=wire.QUERY_MEMBERSHIP))
        got = exchange(grid, messages, QUERY_TIMEOUT_S)
        self.log_failures(server_round, wire.QUERY_MEMBERSHIP, got.failures)
        failed = set(got.failures)
        decisions: dict[tuple[int, int], bool] = {}  # (partition, id): ids are per device in own mode
        metrics: dict[str, list[tuple[float, float]]] = {}
        for node, reply in got.replies.items():
            partition = by_node[node][0].partition_id
            asked = np.concatenate([r.ids for r in by_node[node]])
            try:
                answer = decode_membership(reply, expected_ids=asked, expected_partition=partition)
            except ProtocolError as error:
                self.reject_reply(server_round, wire.QUERY_MEMBERSHIP, node, str(error))
                failed.add(node)
                continue
            decisions.update({(partition, i): member for i, member in answer.decisions.items()})
            for key, value in answer.metrics.items():
                metrics.setdefault(key, []).append((value, answer.num_forget))
        averaged = {k: _weighted(v) for k, v in metrics.items()}
        return {"decisions": decisions, "failed-nodes": sorted(failed), **averaged}

    def record_before(
        self, grid: Grid, arrays: ArrayRecord, server_round: int, new: list[KnownRequest]
    ) -> tuple[dict[str, Any], list[KnownRequest]]:
        """Judge requests' forget sets on the model before unlearning (B_T / B_F).

        Returns the summary over the requests whose owner answered, and those whose owner failed.
        """
        result = self.query(grid, arrays, server_round, new)
        failed = [r for r in new if r.node_id in result["failed-nodes"]]
        answered = [r for r in new if r not in failed]
        for r in failed:
            r.before = None
        for r in answered:
            r.before = {int(i): result["decisions"][(r.partition_id, int(i))] for i in r.ids}
        members = sum(sum(r.before.values()) for r in answered if r.before)
        total = sum(len(r.ids) for r in answered)
        self.write_withdrawals()
        summary = {
            "b-t": members,
            "b-f": total - members,
            **{k: v for k, v in result.items() if k not in ("decisions", "failed-nodes")},
        }
        return summary, failed

    def active(self) -> list[KnownRequest]:
        """The requests FR is measured over: judged before unlearning, and unlearning or unlearned."""
        return [r for r in self.requests.values() if r.before is not None and r.outcome != "pending"]

    def measure(self, grid: Grid, arrays: ArrayRecord, server_round: int) -> dict[str, Any]:
        """FR and accuracies over every request unlearned so far, on the current global model.

        A round in which an owner fails reports no FR (``fr-missing`` lists the failed nodes).
        """
        active = self.active()
        if not active:
            return {}
        result = self.query(grid, arrays, server_round, active)
        if result["failed-nodes"]:
            return {"fr-missing": result["failed-nodes"]}
        keys = [(r.partition_id, i) for r in active for i in (r.before or {})]
        before = dict(enumerate(m for r in active for m in (r.before or {}).values()))
        after = dict(enumerate(result["decisions"][key] for key in keys))
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
            **{k: v for k, v in result.items() if k not in ("decisions", "failed-nodes")},
        }


def message_config(run: PreparedRun, server_round: int) -> dict[str, Any]:
    """What every message to a client carries: the round, the resolved model and the run id; with
    ``client-data = own`` also the model's ``input-shape`` and ``num-classes`` (the device cannot
    read the server's ``dataset``)."""
    config = {"server-round": server_round, "model": run.config.model, "run-id": run.config.run_id}
    if run.config.client_data == "own":
        config.update(model_input_config(run.dataset.info))
    return config


def _weighted(values: list[tuple[float, float]]) -> float:
    finite = [(v, w) for v, w in values if np.isfinite(v)]
    total = sum(w for _, w in finite)
    return float(sum(v * w for v, w in finite) / total) if total else float("nan")
