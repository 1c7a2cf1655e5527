"""One way to open the durable SQLite files (a device's request store, the server's ledger).

Contract: autocommit mode (``isolation_level=None``; callers open their own ``BEGIN IMMEDIATE``
transactions), write-ahead logging (readers never block the writer), ``synchronous=FULL`` (a committed
transaction survives a power cut), a 30 s busy timeout, and the connection always closed.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def connect(path: str | Path) -> Iterator[sqlite3.Connection]:
    """Open ``path`` with the durability settings above; close it on exit."""
    db = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        yield db
    finally:
        db.close()
