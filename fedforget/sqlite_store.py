"""One way to open the durable SQLite files (a device's request store, the server's ledger).

Contract: autocommit mode (``isolation_level=None``; callers open their own ``BEGIN IMMEDIATE``
transactions), write-ahead logging (readers never block the writer), ``synchronous=FULL`` (a committed
transaction survives a power cut), a busy timeout of :data:`BUSY_TIMEOUT_S` (a writer waits that long
for another's lock, then SQLite raises ``database is locked``), and the connection always closed.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

BUSY_TIMEOUT_S = 30.0


@contextlib.contextmanager
def connect(path: str | Path) -> Iterator[sqlite3.Connection]:
    """Open ``path`` with the durability settings above; close it on exit."""
    db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        yield db
    finally:
        db.close()
