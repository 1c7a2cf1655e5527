"""A Flower user's first command, `flwr run . --stream`, on Flower's default local simulation.

That federation has 2 SuperNodes and the app's default is 5 clients: the run used to wait forever
("Waiting for nodes to connect: 2 connected (minimum required: 5)"). It must fail within seconds
and name the exact ``--federation-config`` to use. The detached SuperLink that `flwr run` starts is
found and killed by PID.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from simulations.launcher import PROJECT_ROOT, _terminate, descendants

pytestmark = pytest.mark.slow

HTTP_PORT, CONTROL_PORT = 39141, 39143  # this test's ports (39100-39199)


def _local_superlinks(flwr_home: Path) -> list[int]:
    """PIDs of the SuperLinks `flwr run` started for this FLWR_HOME (its log file names the home)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            args = cmdline.read_bytes().split(b"\0")
            if any(b"flower-superlink" in a for a in args[:2]) and str(flwr_home).encode() in b" ".join(args):
                found.append(int(cmdline.parent.name))
    return found


def test_flwr_run_on_the_default_local_simulation_fails_fast_with_the_fix(tmp_path: Path) -> None:
    flwr_home = tmp_path / "flwr-home"
    ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must stay < 108 bytes
    env = {
        **os.environ,
        "FLWR_HOME": str(flwr_home),
        "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(HTTP_PORT),
        "FLWR_LOCAL_CONTROL_API_PORT": str(CONTROL_PORT),
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "RAY_TMPDIR": ray_tmp,
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    }
    start = time.monotonic()
    try:
        result = subprocess.run(
            [str(Path(sys.executable).parent / "flwr"), "run", ".", "--stream"],
            cwd=PROJECT_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,  # before: it never ended
            stdin=subprocess.DEVNULL,
        )
    finally:
        superlinks = _local_superlinks(flwr_home)
        _terminate([p for pid in superlinks for p in (pid, *descendants(pid))], grace_s=10.0)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    seconds = time.monotonic() - start
    output = result.stdout + result.stderr
    assert superlinks, "flwr run did not start a local SuperLink for this FLWR_HOME"
    assert not _local_superlinks(flwr_home)  # none left running
    assert "this simulation has 2 SuperNodes but the run config has num-clients=5" in output, output[-3000:]
    assert 'flwr run . --stream --federation-config "num-supernodes=5"' in output
    assert "Waiting for nodes to connect" not in output
    assert seconds < 240, f"took {seconds:.0f} s"
