"""A device's durable store of withdrawal requests and tombstones (SQLite).

A withdrawal request is a legal obligation: it is written to disk (one SQLite transaction) before the
device says anything about it, and it survives crashes and restarts. Tables:

* ``requests``: ``request_id``, ``grain`` (``samples`` / ``class`` / ``client``), ``arg`` (the class
  label for ``class``), ``ids`` (JSON list of global ids), ``state`` (``pending`` -> ``completed``, or
  ``rejected``), ``created``, ``updated``, ``detail`` (why rejected / how completed), ``receipt`` (JSON);
* ``tombstones``: every withdrawn global id with the request that withdrew it. A tombstoned sample is
  never used again on this device: not for training, not as reference data;
* ``device``: what the device learned from the run it last took part in (``run-config``: the
  validated run config as JSON, ``partition-id``: its node config's), written by the ClientApp
  (:meth:`RequestStore.remember_run`) so that ``fedforget withdraw`` knows which samples are the
  device's own without being told the run config again.

The file (and SQLite's ``-wal`` / ``-shm`` files beside it) is readable by its owner only (mode
0600, like a private key): it records what a person asked to forget.

Samples are tombstoned as soon as their request is stored, before any unlearning: the device stops
training on them at once; unlearning then removes what the global model already learned.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import os
import sqlite3
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fedforget import sqlite_store

STATES = ("pending", "completed", "rejected")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    request_id TEXT PRIMARY KEY,
    grain TEXT NOT NULL,
    arg REAL,
    ids TEXT NOT NULL,
    state TEXT NOT NULL,
    created TEXT NOT NULL,
    updated TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '',
    receipt TEXT
);
CREATE TABLE IF NOT EXISTS tombstones (
    global_id INTEGER PRIMARY KEY,
    request_id TEXT NOT NULL REFERENCES requests(request_id)
);
CREATE TABLE IF NOT EXISTS device (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""
PRIVATE_MODE = 0o600


class StoreError(RuntimeError):
    """A request store that cannot be used (a folder, not SQLite, read-only, locked, missing)."""


def _store_problem(path: Path, error: BaseException) -> str:
    """One line saying why ``path`` cannot be used as a request store."""
    text = str(error)
    if isinstance(error, PermissionError) or "readonly" in text or "read-only" in text:
        why = "it is read-only or not accessible to this user"
    elif "locked" in text or "busy" in text:
        why = (
            f"another process has held it locked for more than {sqlite_store.BUSY_TIMEOUT_S:g} s "
            "(a running SuperNode?); try again"
        )
    elif "not a database" in text or "malformed" in text:
        why = "the file is not a SQLite database (wrong --store?)"
    else:
        why = text
    return f"cannot use the request store {path}: {why}"


class RequestError(ValueError):
    """A request the device cannot accept (unknown ids, empty, duplicate, already forgotten)."""


@dataclasses.dataclass(frozen=True)
class StoredRequest:
    request_id: str
    grain: str
    arg: float | None
    ids: np.ndarray
    state: str
    created: str
    updated: str
    detail: str
    receipt: dict[str, Any] | None

    def summary(self) -> dict[str, Any]:
        return {
            "request-id": self.request_id,
            "grain": self.grain,
            "num-ids": len(self.ids),
            "state": self.state,
            "created": self.created,
            "updated": self.updated,
            "detail": self.detail,
        }


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


class RequestStore:
    """The withdrawal requests and tombstones of one device, in one SQLite file."""

    def __init__(self, path: str | Path, *, create: bool = True) -> None:
        """Open (``create``: or create, with its folder) the store at ``path``.

        Raises :class:`StoreError` with one line when ``path`` is a folder, not a SQLite file,
        read-only, locked for more than ``sqlite_store.BUSY_TIMEOUT_S``, or (``create=False``) absent.
        """
        self.path = Path(path)
        if self.path.is_dir():
            raise StoreError(f"cannot use the request store {self.path}: it is a folder, not a SQLite file")
        if not create and not self.path.is_file():
            raise StoreError(
                f"no request store at {self.path}: check the path (nothing is created; a store is made by "
                "the first withdrawal or the first run the device takes part in)"
            )
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # created owner-only before SQLite opens it (SQLite gives -wal / -shm the file's mode);
            # a store made by an older version is narrowed too
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, PRIVATE_MODE))
            for file in (self.path, *(self.path.with_name(self.path.name + s) for s in ("-wal", "-shm"))):
                if file.exists() and file.stat().st_mode & 0o777 != PRIVATE_MODE:
                    os.chmod(file, PRIVATE_MODE)
        except OSError as error:
            raise StoreError(_store_problem(self.path, error)) from error
        with self._connect() as db:
            db.executescript(_SCHEMA)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A connection (``sqlite_store.connect``); SQLite's errors become one-line :class:`StoreError`."""
        try:
            with sqlite_store.connect(self.path) as db:
                yield db
        except sqlite3.DatabaseError as error:
            raise StoreError(_store_problem(self.path, error)) from error

    # ------------------------------------------------------------------ writing
    def add(
        self,
        grain: str,
        ids: Sequence[int] | np.ndarray,
        *,
        owned_ids: np.ndarray,
        arg: float | None = None,
        request_id: str | None = None,
    ) -> StoredRequest:
        """Store a request for ``ids`` (which must all be in ``owned_ids``) and tombstone them.

        Raises :class:`RequestError` for an empty request, ids the device does not hold, ids already
        withdrawn by an earlier request, or a duplicate ``request_id`` with different content
        (re-adding the identical request returns the stored one: idempotent).
        """
        wanted = np.unique(np.asarray(ids, dtype=np.int64))
        if wanted.size == 0:
            raise RequestError("empty request: it names no samples")
        foreign = np.setdiff1d(wanted, np.asarray(owned_ids, dtype=np.int64))
        if foreign.size:
            raise RequestError(
                f"this device does not hold {foreign.size} of the ids (e.g. {foreign[:5].tolist()}); "
                "a device can only withdraw its own data"
            )
        rid = request_id or f"wd-{uuid.uuid4().hex[:12]}"
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute("SELECT grain, ids FROM requests WHERE request_id = ?", (rid,)).fetchone()
                if row is not None:
                    db.execute("ROLLBACK")
                    if row[0] == grain and json.loads(row[1]) == wanted.tolist():
                        return self.get(rid)
                    raise RequestError(f"duplicate request id {rid!r} with different content")
                placeholders = ",".join("?" * len(wanted))
                taken = db.execute(
                    "SELECT t.global_id, t.request_id, r.state FROM tombstones t JOIN requests r "
                    f"ON r.request_id = t.request_id WHERE t.global_id IN ({placeholders})",
                    [int(i) for i in wanted],
                ).fetchall()
                if taken:
                    db.execute("ROLLBACK")
                    gid, by, state = taken[0]
                    what = (
                        "already withdrawn and forgotten"
                        if state == "completed"
                        else "already withdrawn (the server has not finished unlearning them yet)"
                    )
                    raise RequestError(
                        f"{len(taken)} of the ids are {what}, e.g. id {gid} by request {by} ({state}); "
                        "nothing to do for them"
                    )
                now = _now()
                db.execute(
                    "INSERT INTO requests (request_id, grain, arg, ids, state, created, updated) "
                    "VALUES (?, ?, ?, ?, 'pending', ?, ?)",
                    (rid, grain, arg, json.dumps(wanted.tolist()), now, now),
                )
                db.executemany(
                    "INSERT INTO tombstones (global_id, request_id) VALUES (?, ?)",
                    [(int(i), rid) for i in wanted],
                )
                db.execute("COMMIT")
            except sqlite3.Error:
                db.execute("ROLLBACK")
                raise
        return self.get(rid)

    def reject(self, request_id: str, grain: str, reason: str, *, arg: float | None = None) -> StoredRequest:
        """Store a request the device refuses, as ``rejected`` with ``reason`` in its receipt.

        Nothing is tombstoned and the server ignores it; it does not stay ``pending`` forever. A request
        id already stored is left as it is (idempotent).
        """
        receipt = {"request-id": request_id, "outcome": "rejected", "note": reason}
        now = _now()
        with self._connect() as db:
            db.execute(
                "INSERT OR IGNORE INTO requests (request_id, grain, arg, ids, state, created, updated, "
                "detail, receipt) VALUES (?, ?, ?, '[]', 'rejected', ?, ?, 'rejected by the device', ?)",
                (request_id, grain, arg, now, now, json.dumps(receipt)),
            )
        return self.get(request_id)

    def complete(self, request_id: str, receipt: dict[str, Any], detail: str = "") -> StoredRequest:
        """Mark a request completed and keep its receipt (idempotent for a completed request)."""
        with self._connect() as db:
            db.execute(
                "UPDATE requests SET state = 'completed', receipt = ?, detail = ?, updated = ? "
                "WHERE request_id = ? AND state != 'completed'",
                (json.dumps(receipt), detail, _now(), request_id),
            )
        return self.get(request_id)

    def remember_run(self, run_config: Mapping[str, Any], *, partition_id: int) -> bool:
        """Keep the run config and partition id of the run this device takes part in (the latest
        one wins); returns whether anything changed."""
        values = {
            "run-config": json.dumps(dict(run_config), sort_keys=True),
            "partition-id": str(partition_id),
        }
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            known = dict(db.execute("SELECT key, value FROM device").fetchall())
            if all(known.get(k) == v for k, v in values.items()):
                db.execute("ROLLBACK")
                return False
            db.executemany("INSERT OR REPLACE INTO device (key, value) VALUES (?, ?)", list(values.items()))
            db.execute("COMMIT")
        return True

    def run_config(self) -> dict[str, Any] | None:
        """The run config :meth:`remember_run` kept, or None if the device never joined a run."""
        with self._connect() as db:
            row = db.execute("SELECT value FROM device WHERE key = 'run-config'").fetchone()
        return json.loads(row[0]) if row else None

    def partition_id(self) -> int | None:
        """The partition id :meth:`remember_run` kept (None if the device never joined a run)."""
        with self._connect() as db:
            row = db.execute("SELECT value FROM device WHERE key = 'partition-id'").fetchone()
        return int(row[0]) if row else None

    # ------------------------------------------------------------------ reading
    def get(self, request_id: str) -> StoredRequest:
        with self._connect() as db:
            row = db.execute(
                "SELECT request_id, grain, arg, ids, state, created, updated, detail, receipt "
                "FROM requests WHERE request_id = ?",
                (request_id,),
            ).fetchone()
        if row is None:
            raise KeyError(f"no request {request_id!r} in {self.path}")
        return _request(row)

    def all(self, state: str | None = None) -> list[StoredRequest]:
        query = "SELECT request_id, grain, arg, ids, state, created, updated, detail, receipt FROM requests"
        params: tuple[Any, ...] = ()
        if state is not None:
            query += " WHERE state = ?"
            params = (state,)
        with self._connect() as db:
            rows = db.execute(query + " ORDER BY rowid", params).fetchall()
        return [_request(r) for r in rows]

    def pending(self) -> list[StoredRequest]:
        return self.all("pending")

    def tombstoned(self) -> np.ndarray:
        """Every withdrawn global id on this device (sorted)."""
        with self._connect() as db:
            rows = db.execute("SELECT global_id FROM tombstones ORDER BY global_id").fetchall()
        return np.asarray([r[0] for r in rows], dtype=np.int64)


def _request(row: tuple[Any, ...]) -> StoredRequest:
    rid, grain, arg, ids, state, created, updated, detail, receipt = row
    return StoredRequest(
        rid,
        grain,
        arg,
        np.asarray(json.loads(ids), dtype=np.int64),
        state,
        created,
        updated,
        detail,
        json.loads(receipt) if receipt else None,
    )
