"""The server's ledger of withdrawal requests (SQLite, WAL): what it learned, did, and delivered.

A withdrawal request is a legal obligation; the ledger is the server's durable memory of each one. It
lives outside any single run record (default ``<run-dir>/ledger.sqlite``, or the ``ledger`` run-config
key), so it survives ServerApp and SuperLink restarts. Rows are keyed by ``(run-id, partition,
request-id)``: the fedforget run id names the model lineage (a resumed run keeps it), the partition
names the device, the request id is the device's.

State machine (every transition is one transaction and one row in ``events``)::

    received --begin_attempt--> unlearning --mark_unlearned--> unlearned --mark_delivered--> receipt-delivered
        ^                           |
        +------- fail_attempt ------+   (node died, mask rejected, server restarted mid-attempt)

Any other transition raises :class:`LedgerError`; so does learning the same request twice with
different ids. Tables:

* ``requests``: ``run_id``, ``partition``, ``request_id``, ``grain``, ``ids_sha256`` (SHA-256 of the
  sorted global ids as little-endian int64), ``num_ids``, ``first_seen_round``, ``state``,
  ``attempts``, ``outcome``, ``receipt`` (JSON), ``created``, ``updated``;
* ``events``: ``seq``, ``run_id``, ``partition``, ``request_id``, ``at``, ``round``, ``from_state``,
  ``to_state``, ``detail``: the full history, failed attempts included;
* ``bindings``: ``run_id``, ``partition``, ``node_id``, ``bound_round``, ``created``: the node each
  partition is bound to (:meth:`Ledger.claim`). Node ids are stored as decimal TEXT: Flower's node ids
  are unsigned 64-bit and do not fit SQLite's signed INTEGER;
* ``binding_events``: ``seq``, ``run_id``, ``partition``, ``node_id``, ``at``, ``round``, ``event``
  (``bound``, ``refused``, ``released``, ``rebound``), ``detail``.

**Partition binding.** A partition is bound to the node that first claims it (its first
``query.requests`` reply naming the partition); a reply from any other node that names the partition
is refused (``refused`` event) and the server reads nothing of it. The node id is the identity: with
SuperNode authentication (``--enable-supernode-auth``) Flower gives each registered public key one
node id that stays the same across SuperNode restarts, so a partition is in effect bound to the
device's key. A device that comes back under another node id (a new key, or an insecure SuperNode,
whose key is new at every start) is refused until the operator re-binds the partition
(``fedforget rebind``, :meth:`Ledger.rebind`; ``docs/deployment.md``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import hashlib
import json
import math
import sqlite3
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fedforget import sqlite_store

RECEIVED = "received"
UNLEARNING = "unlearning"
UNLEARNED = "unlearned"
DELIVERED = "receipt-delivered"
STATES = (RECEIVED, UNLEARNING, UNLEARNED, DELIVERED)
_NEXT = {RECEIVED: {UNLEARNING}, UNLEARNING: {RECEIVED, UNLEARNED}, UNLEARNED: {DELIVERED}, DELIVERED: set()}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    run_id TEXT NOT NULL,
    partition INTEGER NOT NULL,
    request_id TEXT NOT NULL,
    grain TEXT NOT NULL,
    ids_sha256 TEXT NOT NULL,
    num_ids INTEGER NOT NULL,
    first_seen_round INTEGER NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    outcome TEXT NOT NULL DEFAULT '',
    receipt TEXT,
    created TEXT NOT NULL,
    updated TEXT NOT NULL,
    PRIMARY KEY (run_id, partition, request_id)
);
CREATE TABLE IF NOT EXISTS bindings (
    run_id TEXT NOT NULL,
    partition INTEGER NOT NULL,
    node_id TEXT NOT NULL,
    bound_round INTEGER NOT NULL,
    created TEXT NOT NULL,
    PRIMARY KEY (run_id, partition)
);
CREATE TABLE IF NOT EXISTS binding_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    partition INTEGER NOT NULL,
    node_id TEXT,
    at TEXT NOT NULL,
    round INTEGER NOT NULL,
    event TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    partition INTEGER NOT NULL,
    request_id TEXT NOT NULL,
    at TEXT NOT NULL,
    round INTEGER NOT NULL,
    from_state TEXT,
    to_state TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);
"""


class LedgerError(RuntimeError):
    """A transition the state machine forbids, or a ledger that contradicts the model checkpoint."""


Key = tuple[int, str]  # (partition, request id) within one run


@dataclasses.dataclass(frozen=True)
class LedgerEntry:
    run_id: str
    partition: int
    request_id: str
    grain: str
    ids_sha256: str
    num_ids: int
    first_seen_round: int
    state: str
    attempts: int
    outcome: str
    receipt: dict[str, Any] | None
    created: str
    updated: str

    @property
    def key(self) -> Key:
        return (self.partition, self.request_id)


def _json(document: Mapping[str, Any]) -> str:
    """Strict JSON: non-finite numbers (an FR with B_T = 0) are stored as null."""

    def clean(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {str(k): clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        if isinstance(value, float) and not math.isfinite(value):
            return None
        return value

    return json.dumps(clean(dict(document)), allow_nan=False)


def ids_digest(ids: np.ndarray) -> str:
    """SHA-256 of the sorted, unique global ids as little-endian int64 bytes."""
    canonical = np.unique(np.asarray(ids, dtype=np.int64)).astype("<i8")
    return hashlib.sha256(canonical.tobytes()).hexdigest()


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds")


_BIND = "INSERT INTO bindings (run_id, partition, node_id, bound_round, created) VALUES (?, ?, ?, ?, ?)"

_COLUMNS = (
    "run_id, partition, request_id, grain, ids_sha256, num_ids, first_seen_round, state, attempts, "
    "outcome, receipt, created, updated"
)


class Ledger:
    """The requests of every run sharing one ledger file; methods act on ``run_id``'s rows."""

    def __init__(self, path: str | Path, run_id: str) -> None:
        if not run_id:
            raise ValueError("a ledger needs the run id")
        self.path = Path(path)
        self.run_id = run_id
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.executescript(_SCHEMA)

    def _connect(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return sqlite_store.connect(self.path)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    # ------------------------------------------------------------------ reading
    def get(self, partition: int, request_id: str) -> LedgerEntry | None:
        with self._connect() as db:
            row = db.execute(
                f"SELECT {_COLUMNS} FROM requests WHERE run_id = ? AND partition = ? AND request_id = ?",
                (self.run_id, int(partition), request_id),
            ).fetchone()
        return _entry(row) if row else None

    def entries(self, state: str | None = None) -> list[LedgerEntry]:
        query = f"SELECT {_COLUMNS} FROM requests WHERE run_id = ?"
        params: tuple[Any, ...] = (self.run_id,)
        if state is not None:
            query += " AND state = ?"
            params += (state,)
        with self._connect() as db:
            rows = db.execute(query + " ORDER BY rowid", params).fetchall()
        return [_entry(r) for r in rows]

    def events(self, partition: int | None = None, request_id: str | None = None) -> list[dict[str, Any]]:
        query = "SELECT seq, partition, request_id, at, round, from_state, to_state, detail FROM events "
        query += "WHERE run_id = ?"
        params: tuple[Any, ...] = (self.run_id,)
        if partition is not None:
            query += " AND partition = ?"
            params += (int(partition),)
        if request_id is not None:
            query += " AND request_id = ?"
            params += (request_id,)
        with self._connect() as db:
            rows = db.execute(query + " ORDER BY seq", params).fetchall()
        names = ("seq", "partition", "request-id", "at", "round", "from", "to", "detail")
        return [dict(zip(names, r, strict=True)) for r in rows]

    # ------------------------------------------------------------------ transitions
    def receive(
        self, partition: int, request_id: str, grain: str, ids: np.ndarray, server_round: int
    ) -> LedgerEntry:
        """Record a request the server learned of (idempotent for the same ids).

        Raises :class:`LedgerError` if the request is known with other ids.
        """
        digest, count = ids_digest(ids), int(np.unique(np.asarray(ids, dtype=np.int64)).size)
        with self._transaction() as db:
            row = db.execute(
                "SELECT ids_sha256 FROM requests WHERE run_id = ? AND partition = ? AND request_id = ?",
                (self.run_id, int(partition), request_id),
            ).fetchone()
            if row is not None:
                if row[0] != digest:
                    raise LedgerError(
                        f"request {request_id!r} of partition {partition} is already in the ledger with "
                        "other ids; a request never changes"
                    )
            else:
                now = _now()
                db.execute(
                    "INSERT INTO requests (run_id, partition, request_id, grain, ids_sha256, num_ids, "
                    "first_seen_round, state, created, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        self.run_id,
                        int(partition),
                        request_id,
                        grain,
                        digest,
                        count,
                        server_round,
                        RECEIVED,
                        now,
                        now,
                    ),
                )
                self._event(db, partition, request_id, server_round, None, RECEIVED, f"{count} ids")
        entry = self.get(partition, request_id)
        assert entry is not None
        return entry

    def begin_attempt(self, keys: list[Key], server_round: int) -> None:
        """``received -> unlearning`` for every key (one transaction), counting the attempt."""
        with self._transaction() as db:
            for partition, rid in keys:
                self._move(db, partition, rid, RECEIVED, UNLEARNING, server_round, "attempt started")
                db.execute(
                    "UPDATE requests SET attempts = attempts + 1 WHERE run_id = ? AND partition = ? "
                    "AND request_id = ?",
                    (self.run_id, int(partition), rid),
                )

    def fail_attempt(self, keys: list[Key], server_round: int, reason: str) -> None:
        """``unlearning -> received``: the attempt is recorded as failed; the request stays open."""
        with self._transaction() as db:
            for partition, rid in keys:
                self._move(
                    db, partition, rid, UNLEARNING, RECEIVED, server_round, f"attempt failed: {reason}"
                )

    def mark_unlearned(
        self, keys: list[Key], server_round: int, outcome: str, receipt: Mapping[str, Any], detail: str = ""
    ) -> None:
        """``unlearning -> unlearned`` with the outcome and receipt (call only after the model that
        holds the unlearning is durably checkpointed)."""
        with self._transaction() as db:
            for partition, rid in keys:
                self._move(db, partition, rid, UNLEARNING, UNLEARNED, server_round, detail or outcome)
                db.execute(
                    "UPDATE requests SET outcome = ?, receipt = ? WHERE run_id = ? AND partition = ? "
                    "AND request_id = ?",
                    (outcome, _json(receipt), self.run_id, int(partition), rid),
                )

    def mark_delivered(self, keys: list[Key], server_round: int) -> None:
        """``unlearned -> receipt-delivered`` (the device acknowledged storing the receipt)."""
        with self._transaction() as db:
            for partition, rid in keys:
                self._move(
                    db, partition, rid, UNLEARNED, DELIVERED, server_round, "device stored the receipt"
                )

    # ------------------------------------------------------------------ recovery
    def reconcile(self, applied: Mapping[Key, Mapping[str, Any]], server_round: int) -> dict[str, list[Key]]:
        """Make the ledger agree with the resume checkpoint after a restart.

        ``applied`` maps every request whose unlearning the checkpointed model holds to its
        ``{"outcome": ..., "receipt": ...}``. Requests the checkpoint holds but the ledger does not yet
        call unlearned are rolled forward; ``unlearning`` requests it does not hold are rolled back
        to ``received`` (their attempt died with the server). A request the ledger calls unlearned but
        the checkpoint does not hold would be a lost unlearning: :class:`LedgerError`.
        """
        done: dict[str, list[Key]] = {"rolled-forward": [], "rolled-back": []}
        with self._transaction() as db:
            rows = db.execute(
                "SELECT partition, request_id, state FROM requests WHERE run_id = ?", (self.run_id,)
            ).fetchall()
            for partition, rid, state in rows:
                key = (int(partition), str(rid))
                if key in applied:
                    if state in (RECEIVED, UNLEARNING):
                        if state == RECEIVED:
                            self._move(db, partition, rid, RECEIVED, UNLEARNING, server_round, "recovery")
                        info = applied[key]
                        self._move(
                            db,
                            partition,
                            rid,
                            UNLEARNING,
                            UNLEARNED,
                            server_round,
                            "recovered: the resume checkpoint holds this unlearning",
                        )
                        db.execute(
                            "UPDATE requests SET outcome = ?, receipt = ? WHERE run_id = ? AND partition = ? "
                            "AND request_id = ?",
                            (
                                str(info.get("outcome", "")),
                                _json(info.get("receipt") or {}),
                                self.run_id,
                                int(partition),
                                rid,
                            ),
                        )
                        done["rolled-forward"].append(key)
                elif state == UNLEARNING:
                    self._move(
                        db,
                        partition,
                        rid,
                        UNLEARNING,
                        RECEIVED,
                        server_round,
                        "attempt failed: interrupted by a server restart before it was checkpointed",
                    )
                    done["rolled-back"].append(key)
                elif state in (UNLEARNED, DELIVERED):
                    raise LedgerError(
                        f"the ledger says request {rid!r} of partition {partition} was unlearned, but the "
                        "resume checkpoint does not hold that unlearning; refusing to resume from it"
                    )
        return done

    # ------------------------------------------------------------------ partition binding
    def bound_node(self, partition: int) -> int | None:
        """The node ``partition`` is bound to (None while no node has claimed it)."""
        with self._connect() as db:
            row = db.execute(
                "SELECT node_id FROM bindings WHERE run_id = ? AND partition = ?",
                (self.run_id, int(partition)),
            ).fetchone()
        return None if row is None else int(row[0])

    def bindings(self) -> dict[int, int]:
        """``partition -> node id`` of every bound partition."""
        with self._connect() as db:
            rows = db.execute("SELECT partition, node_id FROM bindings WHERE run_id = ?", (self.run_id,))
            return {int(p): int(n) for p, n in rows.fetchall()}

    def claim(self, partition: int, node: int, server_round: int) -> int:
        """``node`` claims ``partition``: bind it if no node has, and return the node it is bound to.

        The claim holds when the returned node is ``node``; otherwise it is refused, and the refusal
        is a ``refused`` row in ``binding_events``.
        """
        with self._transaction() as db:
            row = db.execute(
                "SELECT node_id FROM bindings WHERE run_id = ? AND partition = ?",
                (self.run_id, int(partition)),
            ).fetchone()
            if row is None:
                db.execute(
                    _BIND,
                    (self.run_id, int(partition), str(int(node)), int(server_round), _now()),
                )
                self._binding_event(db, partition, node, server_round, "bound", "first claim")
                return int(node)
            if int(row[0]) != int(node):
                detail = f"partition {partition} is bound to node {row[0]}"
                self._binding_event(db, partition, node, server_round, "refused", detail)
            return int(row[0])

    def rebind(self, partition: int, *, node: int | None, server_round: int = 0, detail: str = "") -> None:
        """The operator's re-binding of a replaced device: bind ``partition`` to ``node``, or (``node``
        None) release it so that the next node to claim it is bound."""
        with self._transaction() as db:
            row = db.execute(
                "SELECT node_id FROM bindings WHERE run_id = ? AND partition = ?",
                (self.run_id, int(partition)),
            ).fetchone()
            db.execute(
                "DELETE FROM bindings WHERE run_id = ? AND partition = ?", (self.run_id, int(partition))
            )
            was = "unbound" if row is None else f"was node {row[0]}"
            if node is None:
                self._binding_event(db, partition, None, server_round, "released", f"{was}; {detail}")
                return
            db.execute(
                _BIND,
                (self.run_id, int(partition), str(int(node)), int(server_round), _now()),
            )
            self._binding_event(db, partition, node, server_round, "rebound", f"{was}; {detail}")

    def binding_events(self, partition: int | None = None) -> list[dict[str, Any]]:
        query = (
            "SELECT seq, partition, node_id, at, round, event, detail FROM binding_events WHERE run_id = ?"
        )
        params: tuple[Any, ...] = (self.run_id,)
        if partition is not None:
            query += " AND partition = ?"
            params += (int(partition),)
        with self._connect() as db:
            rows = db.execute(query + " ORDER BY seq", params).fetchall()
        names = ("seq", "partition", "node", "at", "round", "event", "detail")
        events = [dict(zip(names, r, strict=True)) for r in rows]
        for event in events:
            event["node"] = None if event["node"] is None else int(event["node"])
        return events

    def _binding_event(
        self, db: sqlite3.Connection, partition: int, node: int | None, rnd: int, event: str, detail: str
    ) -> None:
        db.execute(
            "INSERT INTO binding_events (run_id, partition, node_id, at, round, event, detail) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                self.run_id,
                int(partition),
                None if node is None else str(int(node)),
                _now(),
                int(rnd),
                event,
                detail[:2000],
            ),
        )

    # ------------------------------------------------------------------ internals
    def _move(
        self,
        db: sqlite3.Connection,
        partition: int,
        rid: str,
        source: str,
        target: str,
        rnd: int,
        detail: str,
    ) -> None:
        row = db.execute(
            "SELECT state FROM requests WHERE run_id = ? AND partition = ? AND request_id = ?",
            (self.run_id, int(partition), rid),
        ).fetchone()
        if row is None:
            raise LedgerError(f"request {rid!r} of partition {partition} is not in the ledger")
        if row[0] != source or target not in _NEXT[source]:
            raise LedgerError(
                f"request {rid!r} of partition {partition} is {row[0]!r}; "
                f"cannot move {source!r} -> {target!r}"
            )
        db.execute(
            "UPDATE requests SET state = ?, updated = ? "
            "WHERE run_id = ? AND partition = ? AND request_id = ?",
            (target, _now(), self.run_id, int(partition), rid),
        )
        self._event(db, partition, rid, rnd, source, target, detail)

    def _event(
        self,
        db: sqlite3.Connection,
        partition: int,
        rid: str,
        rnd: int,
        source: str | None,
        target: str,
        detail: str,
    ) -> None:
        db.execute(
            "INSERT INTO events (run_id, partition, request_id, at, round, from_state, to_state, detail) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (self.run_id, int(partition), rid, _now(), int(rnd), source, target, detail[:2000]),
        )


def _entry(row: tuple[Any, ...]) -> LedgerEntry:
    (
        run_id,
        partition,
        rid,
        grain,
        digest,
        num,
        first,
        state,
        attempts,
        outcome,
        receipt,
        created,
        updated,
    ) = row
    return LedgerEntry(
        run_id,
        int(partition),
        rid,
        grain,
        digest,
        int(num),
        int(first),
        state,
        int(attempts),
        outcome,
        json.loads(receipt) if receipt else None,
        created,
        updated,
    )
