"""The process launcher stops what it started, including helpers in their own sessions."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from simulations.launcher import _alive, descendants, start_process

# A parent that starts a child in a new session (as Flower's SuperLink starts its SuperExec) and waits.
PARENT = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
print(child.pid, flush=True)
time.sleep(120)
"""


def test_stop_also_ends_children_in_other_sessions(tmp_path: Path) -> None:
    proc = start_process("parent", [sys.executable, "-c", PARENT], {}, tmp_path)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not descendants(proc.pid):
        time.sleep(0.1)
    (child,) = descendants(proc.pid)
    assert _alive(child)
    proc.stop(grace_s=2.0)
    assert not proc.alive()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(child):
        time.sleep(0.1)
    assert not _alive(child), "the child in its own session outlived stop()"


def test_alive_is_false_for_unknown_pid() -> None:
    assert not _alive(2**22 + 12345)
