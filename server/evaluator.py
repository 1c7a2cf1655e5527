"""The server's forgetting-rate evaluator: withdrawal requests, and the judge of every round.

* **Requests**: each round the server asks every client for its withdrawal requests
  (``query.requests``); a new request goes into the server's ledger (``server/ledger.py``) and is
  logged in ``withdrawals.json`` with its ids.
* **The judge** (:mod:`fedforget.judge`, ``docs/forgetting-rate.md``): the attacks that score
  forgetting, never sent in an unlearning message and never what a method steers or stops by
  (devices steer by their own oracle, :mod:`fedforget.steer`). Until the first withdrawal the judge
  is the loss attack alone (nothing to fit); at the first withdrawal the server fits the
  ``judge-attacks`` (shadow *federations* on its own half of the auxiliary data, trained like the
  target: :func:`fedforget.judge.fit_judge`).
* **Calibration, every round**: every client scores its own retained (member) and held-out
  (non-member) samples with the judge on the current global model and sends back score histograms,
  counts only (``query.judge``). From them the server computes each attack's power on this model
  (AUC with its lower 95% bound, TPR at 1% and 0.1% FPR, balanced accuracy) and its decision
  threshold: one ``judge-power`` row per round in ``metrics.jsonl``.
* **Before**: for new requests, the same query on the model *before* unlearning; the owners also
  return the score bin of every forget sample: B_T members, B_F non-members per attack.
* **Every round after**: the owners score the forget set again; per attack FR = (A_F - B_F) / B_T
  with each model judged by the threshold calibrated on it, and the forget-vs-never-seen AUC. FR is
  *not measurable* (``fr`` is None, ``fr-status`` says why) when the attack is at chance on either
  model or B_T = 0. The row's ``fr`` and ``attack-auc`` are the headline attack's (``judge`` names
  it); ``fr-<attack>`` and ``attack-auc-<attack>`` give every attack side by side.

No feature vector or label is sent, but ids, score bins, histograms and (``train.unlearn``) masks do
leave the device, and a mask can reveal the samples it was computed from (``docs/privacy.md``).
Sample ids are global ids of the shared dataset (``client-data = shared``) or the device's own ids
(``client-data = own``); forget samples are therefore keyed by ``(partition, id)``.
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
from fedforget.judge import (
    Judge,
    JudgePower,
    LossAttack,
    calibrate,
    forget_auc,
    judge_forget_set,
)
from fedforget.judge.for_run import fit_run_judge, run_judge_attacks
from protocol import messages as wire
from protocol.codec import judge_to_records
from protocol.replies import ProtocolError, decode_judge, decode_receipt_ack, decode_requests
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
    """The headline attack's member decision per id on the model before unlearning."""
    outcome: str = "pending"
    rounds_measured: list[int] = dataclasses.field(default_factory=list)
    receipt: dict[str, Any] | None = None
    before_bins: dict[str, np.ndarray] | None = None
    """Per judge attack, each forget sample's score bin on the model before unlearning (order of ids)."""
    before_power: dict[str, JudgePower] | None = None
    """Per judge attack, its calibration on the model before unlearning."""

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
            "before-bins": None
            if self.before_bins is None
            else {a: b.tolist() for a, b in self.before_bins.items()},
            "before-power": None
            if self.before_power is None
            else {a: p.to_dict() for a, p in self.before_power.items()},
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> KnownRequest:
        ids = np.asarray(doc["global-ids"], dtype=np.int64)
        members = doc.get("before-members")
        judged = None if members is None else {int(i) for i in members}
        before = None if judged is None else {int(i): int(i) in judged for i in ids}
        bins, power = doc.get("before-bins"), doc.get("before-power")
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
            None if bins is None else {a: np.asarray(b, dtype=np.int64) for a, b in bins.items()},
            None if power is None else {a: JudgePower.from_dict(p) for a, p in power.items()},
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
        self._judge: Judge | None = None
        self._judge_fitted = False
        self._ignored: set[Key] = set()
        path = run.record.path / "withdrawals.json"
        if run.resume is not None and path.exists():
            for doc in run.record.read_json("withdrawals.json")["requests"]:
                known = KnownRequest.from_json(doc)
                self.requests[known.key] = known

    # ------------------------------------------------------------------ the judge
    def judge(self) -> Judge:
        """The judge as it stands: the loss attack alone until :meth:`fit_judge` has run."""
        if self._judge is None:
            self._judge = Judge({"loss": LossAttack()}, "loss")
        return self._judge

    def fit_judge(self) -> Judge:
        """Fit the ``judge-attacks`` once (shadow federations on the judge's half of the auxiliary
        data, seeded apart from the run); logged as ``judge-trained``. Reused afterwards."""
        if self._judge_fitted:
            return self.judge()
        config = self.run.config
        attacks, skipped = run_judge_attacks(config)
        start = time.perf_counter()
        self._judge = fit_run_judge(config, self.run.dataset, self.run.split)
        self._judge_fitted = True
        self.run.record.append_metrics(
            {
                "phase": "judge",
                "event": "judge-trained",
                "judge": self._judge.headline,
                "attacks": list(self._judge.names),
                "skipped": skipped,
                "shadow-federations": config.num_shadows if attacks != ["loss"] else 0,
                "seconds": time.perf_counter() - start,
            }
        )
        return self._judge

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
        self,
        grid: Grid,
        arrays: ArrayRecord,
        server_round: int,
        requests: Iterable[KnownRequest],
        *,
        model_label: str = "global",
    ) -> dict[str, Any]:
        """One judge query on ``arrays``: every node calibrates, the owners of ``requests`` score their
        forget sets. Logs the ``judge-power`` row (``model_label`` says which model it is about).

        Returns ``power`` (attack -> :class:`JudgePower`, ``None`` when no node answered), ``bins``
        (request key -> attack -> bin per id, in the order of the request's ids), the owners' forget /
        retain / reference accuracies weighted by forget-set size, and ``failed-nodes``: nodes that
        failed or whose reply did not decode (:func:`protocol.replies.decode_judge`).
        """
        judge = self.judge()
        judge_record, judge_config = judge_to_records(judge)
        by_node: dict[int, list[KnownRequest]] = {}
        for r in requests:
            by_node.setdefault(r.node_id, []).append(r)
        nodes = sorted(set(grid.get_node_ids()) | set(by_node))
        messages = []
        for node_id in nodes:
            items = by_node.get(node_id, [])
            content = RecordDict(
                {
                    wire.MODEL: arrays,
                    wire.JUDGE: judge_record,
                    wire.JUDGE_CONFIG: judge_config,
                    wire.CONFIG: ConfigRecord(
                        {**self.message_config(server_round), wire.REQUEST_IDS: [r.request_id for r in items]}
                    ),
                }
            )
            messages.append(Message(content, dst_node_id=node_id, message_type=wire.QUERY_JUDGE))
        got = exchange(grid, messages, QUERY_TIMEOUT_S)
        self.log_failures(server_round, wire.QUERY_JUDGE, got.failures)
        failed = set(got.failures)
        calibrations = []
        bins: dict[Key, dict[str, np.ndarray]] = {}
        metrics: dict[str, list[tuple[float, float]]] = {}
        for node, reply in got.replies.items():
            items = by_node.get(node, [])
            asked = np.concatenate([r.ids for r in items]) if items else None
            try:
                answer = decode_judge(
                    reply,
                    attacks=judge.names,
                    expected_ids=asked,
                    expected_partition=items[0].partition_id if items else None,
                )
            except ProtocolError as error:
                self.reject_reply(server_round, wire.QUERY_JUDGE, node, str(error))
                failed.add(node)
                continue
            calibrations.append(answer.calibration)
            if items:
                position = {int(i): k for k, i in enumerate(answer.ids)}
                for r in items:
                    order = np.asarray([position[int(i)] for i in r.ids], dtype=np.int64)
                    bins[r.key] = {a: answer.bins[a][order] for a in judge.names}
                for key, value in answer.metrics.items():
                    metrics.setdefault(key, []).append((value, answer.num_forget))
        power = calibrate(calibrations) if calibrations else None
        self._log_power(server_round, power, model_label, len(calibrations))
        averaged = {k: _weighted(v) for k, v in metrics.items()}
        return {"power": power, "bins": bins, "failed-nodes": sorted(failed), **averaged}

    def _log_power(
        self, server_round: int, power: dict[str, JudgePower] | None, model_label: str, nodes: int
    ) -> None:
        judge = self.judge()
        row: dict[str, Any] = {
            "round": server_round,
            "phase": "judge",
            "event": "judge-power",
            "model": model_label,
            "judge": judge.headline,
            "nodes": nodes,
        }
        if power is not None:
            row.update({a: power[a].summary() for a in judge.names if a in power})
            headline = power.get(judge.headline)
            if headline is not None:
                row["measurable"] = bool(headline.measurable)
        self.run.record.append_metrics(row)

    def record_before(
        self, grid: Grid, arrays: ArrayRecord, server_round: int, new: list[KnownRequest]
    ) -> tuple[dict[str, Any], list[KnownRequest]]:
        """Judge requests' forget sets on the model before unlearning (B_T / B_F under every attack).

        Fits the judge first (once). Returns the summary over the requests whose owner answered (the
        headline's ``b-t`` / ``b-f``, ``b-t-<attack>`` for every attack, the headline's power), and
        the requests whose owner failed.
        """
        judge = self.fit_judge()
        result = self.query(grid, arrays, server_round, new, model_label="before-unlearning")
        power = result["power"]
        failed = [r for r in new if r.node_id in result["failed-nodes"] or r.key not in result["bins"]]
        answered = [r for r in new if r not in failed]
        for r in failed:
            r.before, r.before_bins, r.before_power = None, None, None
        summary: dict[str, Any] = {"judge": judge.headline}
        if power is None:
            return summary, list(new)
        for r in answered:
            r.before_bins = result["bins"][r.key]
            r.before_power = power
            member = power[judge.headline].is_member(r.before_bins[judge.headline])
            r.before = {int(i): bool(m) for i, m in zip(r.ids, member, strict=True)}
        total = sum(len(r.ids) for r in answered)
        for attack in judge.names:
            members = sum(int(power[attack].is_member(r.before_bins[attack]).sum()) for r in answered)
            summary[f"b-t-{attack}"] = members
            if attack == judge.headline:
                summary["b-t"], summary["b-f"] = members, total - members
        summary["judge-auc"] = power[judge.headline].summary()["auc"]
        summary["judge-measurable"] = bool(power[judge.headline].measurable)
        summary.update({k: v for k, v in result.items() if k not in ("power", "bins", "failed-nodes")})
        self.write_withdrawals()
        return summary, failed

    def active(self) -> list[KnownRequest]:
        """The requests FR is measured over: judged before unlearning, and unlearning or unlearned."""
        return [
            r
            for r in self.requests.values()
            if r.before is not None and r.before_bins is not None and r.outcome != "pending"
        ]

    def measure(
        self, grid: Grid, arrays: ArrayRecord, server_round: int, *, model_label: str = "global"
    ) -> dict[str, Any]:
        """The judge on the current global model: its power (a ``judge-power`` row, every round) and,
        over every request unlearned so far, FR and forget-vs-never-seen AUC under each attack.

        A round in which an owner fails reports no FR (``fr-missing`` lists the failed nodes).
        """
        active = self.active()
        result = self.query(grid, arrays, server_round, active, model_label=model_label)
        if not active:
            return {}
        if result["failed-nodes"] and any(r.node_id in result["failed-nodes"] for r in active):
            return {"fr-missing": result["failed-nodes"]}
        if result["power"] is None or any(r.key not in result["bins"] for r in active):
            return {"fr-missing": result["failed-nodes"]}
        row = self.judge_requests(active, result["power"], result["bins"])
        for r in active:
            if server_round not in r.rounds_measured:
                r.rounds_measured.append(server_round)
        self.write_withdrawals()
        row.update({k: v for k, v in result.items() if k not in ("power", "bins", "failed-nodes")})
        return row

    def judge_requests(
        self,
        requests: list[KnownRequest],
        power: dict[str, JudgePower],
        bins: dict[Key, dict[str, np.ndarray]],
    ) -> dict[str, Any]:
        """FR, B_T / B_F / A_F and forget-vs-never-seen AUC of ``requests`` under every attack, on the
        model ``power`` and ``bins`` were measured on, each against its own "before" calibration.

        Requests unlearned in different attempts have different "before" models: their counts are
        summed (``FR = (sum A_F - sum B_F) / sum B_T``); the FR is measured only when every group's is.
        """
        judge = self.judge()
        row: dict[str, Any] = {"judge": judge.headline}
        groups: dict[int, list[KnownRequest]] = {}
        for r in requests:
            groups.setdefault(id(r.before_power), []).append(r)
        for attack in judge.names:
            b_t = b_f = a_f = n = 0
            statuses, reasons = [], []
            before_aucs: list[float] = []
            for items in groups.values():
                before_power = items[0].before_power or {}
                if attack not in before_power or any(attack not in (r.before_bins or {}) for r in items):
                    statuses.append("not-measurable")
                    reasons.append(f"{attack} was not part of the judge before unlearning")
                    continue
                judged = judge_forget_set(
                    before={attack: before_power[attack]},
                    after={attack: power[attack]},
                    before_bins={attack: np.concatenate([(r.before_bins or {})[attack] for r in items])},
                    after_bins={attack: np.concatenate([bins[r.key][attack] for r in items])},
                )[attack]
                b_t, b_f, a_f, n = (
                    b_t + judged.counts.b_t,
                    b_f + judged.counts.b_f,
                    a_f + judged.counts.a_f,
                    n + judged.counts.n,
                )
                statuses.append(judged.status)
                reasons.append(judged.reason)
                before_aucs.append(judged.auc_before)
            measured = bool(statuses) and all(s == "measured" for s in statuses)
            fr = (a_f - b_f) / b_t if measured and b_t else None
            after = np.concatenate([bins[r.key][attack] for r in requests])
            auc = forget_auc(power[attack], after)
            row[f"fr-{attack}"] = fr
            row[f"attack-auc-{attack}"] = auc if np.isfinite(auc) else None
            row[f"fr-status-{attack}"] = "measured" if measured else "not-measurable"
            # on the model before unlearning (one attempt's requests: one such model; else not one number)
            auc_before = before_aucs[0] if len(before_aucs) == 1 and np.isfinite(before_aucs[0]) else None
            row[f"attack-auc-before-{attack}"] = auc_before
            if attack == judge.headline:
                row.update(
                    {
                        "fr": fr,
                        "fr-status": row[f"fr-status-{attack}"],
                        "fr-reason": "; ".join(dict.fromkeys(reasons))[:500],
                        "b-t": b_t,
                        "b-f": b_f,
                        "a-f": a_f,
                        "num-forget": n,
                        "attack-auc": row[f"attack-auc-{attack}"],
                        "attack-auc-before": auc_before,
                        "judge-auc": power[attack].summary()["auc"],
                    }
                )
        return row


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
