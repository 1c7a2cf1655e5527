"""Deterministic crashes at the server's commit points, for the recovery tests only.

A test sets ``FEDFORGET_CRASH_AT`` to one or more point names (comma-separated) in the environment
of the process that commits (the ServerApp: the SuperLink's app processes inherit its environment);
:func:`crash_point` then kills that process with SIGKILL (no clean-up, no ``finally``, no flush: a
power cut as far as the process is concerned) the moment it reaches a named point. Unset, nothing
happens.

With ``FEDFORGET_CRASH_FUSE`` naming a folder, each point fires once: the first process to reach it
creates ``<folder>/<point>`` (exclusively) holding its PID and program name, then dies; later
processes, e.g. the resumed run, pass the point. The SuperLink starts its app processes from one
long-lived process, so without a fuse every resumed run would die at the same point again.

The points, in the order a commit reaches them (``server/requests.py``):

* ``masks-aggregated``: the unlearning rounds are done, the model holds the masks, nothing is
  durable yet (the ledger says ``unlearning``);
* ``resume-written``: ``resume.pt`` holds the unlearned model and its receipts, the ledger still
  says ``unlearning``;
* ``ledger-committed``: the ledger says ``unlearned``, the receipt has not been sent.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

CRASH_AT = "FEDFORGET_CRASH_AT"
CRASH_FUSE = "FEDFORGET_CRASH_FUSE"
POINTS = ("masks-aggregated", "resume-written", "ledger-committed")


def crash_point(name: str) -> None:
    """SIGKILL this process if ``$FEDFORGET_CRASH_AT`` names ``name`` (once per fuse, see above)."""
    if name not in POINTS:
        raise ValueError(f"unknown crash point {name!r}; known: {', '.join(POINTS)}")
    wanted = {part.strip() for part in os.environ.get(CRASH_AT, "").split(",")}
    if name not in wanted:
        return
    fuse = os.environ.get(CRASH_FUSE)
    if fuse:
        try:
            fd = os.open(Path(fuse) / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return  # this point already fired
        try:
            os.write(fd, f"{os.getpid()} {Path(sys.argv[0]).name}\n".encode())
            os.fsync(fd)
        finally:
            os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)
