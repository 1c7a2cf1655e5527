"""Start and stop Flower processes by PID, submit runs with ``flwr run`` and check how they ended.

``flwr run`` exits 0 even when the run failed, so :func:`submit_run` reads the run's final status
with ``flwr ls --run-id ID --format json`` and :class:`FlowerRunError` is raised unless it is
``finished:completed``. Every process started here is started in its own process group and killed
by PID (SIGTERM, then SIGKILL) when the ``with`` block ends, whatever happened inside it.

A private ``FLWR_HOME`` per launch keeps the user's Flower configuration untouched and holds the
connection entry ``[superlink.<name>]`` that ``flwr run . <name>`` uses.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONNECTION = "fedforget"


class FlowerRunError(RuntimeError):
    """A Flower run that did not complete (failed, stopped, or never started)."""


def _bin(name: str) -> str:
    """A Flower executable from the running interpreter's environment (falls back to PATH)."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if not found:
        raise FileNotFoundError(f"'{name}' not found; install the project (make setup) first")
    return found


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def flower_env(flwr_home: Path) -> dict[str, str]:
    """Environment for Flower processes: private FLWR_HOME, no telemetry, no runtime ``uv sync``."""
    env = dict(os.environ)
    env.update(
        {
            "FLWR_HOME": str(flwr_home),
            "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "RAY_TMPDIR": str(flwr_home / "ray"),
            "RAY_DEDUP_LOGS": "0",
            "PYTHONUNBUFFERED": "1",
        }
    )
    # The SuperLink and SuperNodes spawn further Flower executables by name: use this environment's.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    # Processes run the app from a copy under FLWR_HOME: make the project importable there too.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH", "")]))
    return env


@dataclasses.dataclass
class ManagedProcess:
    """A child process in its own process group, with its output in a log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def kill(self) -> list[int]:
        """``kill -9`` this process and every process it started (a crash: no clean-up runs).

        Flower starts some helpers in their own sessions (SuperExec, app processes), so the tree is
        found through ``/proc`` before anything is killed; returns the PIDs killed.
        """
        pids = [self.pid, *descendants(self.pid)]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=10)
        return pids

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM the process group, wait, then SIGKILL what is left, helpers in other sessions too.

        Flower starts some helpers in their own sessions (SuperExec, ``flwr-simulation`` with its Ray
        workers), out of this process group: they are listed before the signal and any still alive
        afterwards is terminated as well.
        """
        if self.popen.poll() is not None:
            return
        below = descendants(self.pid)
        for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, sig)
            try:
                self.popen.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        _terminate(below, grace_s=3.0)


def descendants(pid: int) -> list[int]:
    """Every living process below ``pid`` (children, grandchildren, ...), read from ``/proc`` (Linux)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _terminate(pids: Sequence[int], grace_s: float) -> None:
    """SIGTERM the still-living ``pids``, then SIGKILL those that outlive ``grace_s``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        living = [pid for pid in pids if _alive(pid)]
        for pid in living:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace_s
        while living and time.monotonic() < deadline:
            time.sleep(0.1)
            living = [pid for pid in living if _alive(pid)]
        if not living:
            return


def start_process(name: str, argv: Sequence[str], env: Mapping[str, str], log_dir: Path) -> ManagedProcess:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    restart = 1
    while log_path.exists():  # a restarted process keeps the earlier log
        restart += 1
        log_path = log_dir / f"{name}-{restart}.log"
    handle = open(log_path, "wb")  # noqa: SIM115 - owned by the child for its lifetime
    popen = subprocess.Popen(
        list(argv),
        stdout=handle,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=dict(env),
        start_new_session=True,
        cwd=str(log_dir),
    )
    handle.close()
    return ManagedProcess(name, popen, log_path)


def wait_for_port(port: int, process: ManagedProcess, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not process.alive():
            raise FlowerRunError(f"{process.name} exited early:\n{process.log_tail()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.2)
    raise FlowerRunError(
        f"{process.name} did not open port {port} in {timeout_s:.0f}s:\n{process.log_tail()}"
    )


@dataclasses.dataclass
class TLSFiles:
    """Paths for a TLS SuperLink: CA certificate, server certificate and key."""

    ca_cert: Path
    server_cert: Path
    server_key: Path


@dataclasses.dataclass
class Federation:
    """A running SuperLink (and optional SuperNodes) plus the FLWR_HOME that connects to it."""

    flwr_home: Path
    control_port: int
    fleet_port: int
    superlink: ManagedProcess
    env: dict[str, str]
    supernodes: list[ManagedProcess] = dataclasses.field(default_factory=list)
    tls: TLSFiles | None = None
    superlink_argv: list[str] = dataclasses.field(default_factory=list)

    def restart_superlink(self) -> ManagedProcess:
        """Start the SuperLink again with the same arguments (port, ``--database``, TLS) after it
        died; connected SuperNodes reconnect on their own."""
        if self.superlink.alive():
            raise RuntimeError("the SuperLink is still running; kill or stop it first")
        self.superlink = start_process("superlink", self.superlink_argv, self.env, self.log_dir)
        wait_for_port(self.control_port, self.superlink)
        return self.superlink

    @property
    def log_dir(self) -> Path:
        return self.flwr_home / "logs"

    def start_supernode(
        self,
        partition_id: int,
        num_partitions: int,
        extra_node_config: Mapping[str, Any] | None = None,
        auth_private_key: Path | None = None,
    ) -> ManagedProcess:
        """Start a SuperNode for one partition, connected to this SuperLink's Fleet API."""
        node_config = {"partition-id": partition_id, "num-partitions": num_partitions}
        node_config.update(extra_node_config or {})
        argv = [
            _bin("flower-supernode"),
            "--superlink",
            f"127.0.0.1:{self.fleet_port}",
            "--node-config",
            " ".join(f"{k}={_toml_value(v)}" for k, v in node_config.items()),
            "--host",
            "127.0.0.1",
            "--port",
            str(free_port()),
        ]
        if self.tls is None:
            argv.append("--insecure")
        else:
            argv += ["--root-certificates", str(self.tls.ca_cert)]
        if auth_private_key is not None:
            argv += ["--auth-supernode-private-key", str(auth_private_key)]
        node = start_process(f"supernode-{partition_id}", argv, self.env, self.log_dir)
        self.supernodes.append(node)
        return node

    def stop(self) -> None:
        for node in self.supernodes:
            node.stop()
        self.superlink.stop()


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))


def _write_connection(
    flwr_home: Path, control_port: int, options: Mapping[str, Any], tls: TLSFiles | None
) -> None:
    lines = ["[superlink]", f'default = "{CONNECTION}"', "", f"[superlink.{CONNECTION}]"]
    lines.append(f'address = "127.0.0.1:{control_port}"')
    if tls is None:
        lines.append("insecure = true")
    else:
        lines.append(f'root-certificates = "{tls.ca_cert}"')
    if options:
        lines += ["", f"[superlink.{CONNECTION}.options]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in options.items() if not isinstance(v, Mapping)]
        for table, values in options.items():
            if isinstance(values, Mapping):
                lines += ["", f"[superlink.{CONNECTION}.options.{table}]"]
                lines += [f"{k} = {_toml_value(v)}" for k, v in values.items()]
    flwr_home.mkdir(parents=True, exist_ok=True)
    (flwr_home / "config.toml").write_text("\n".join(lines) + "\n")


@contextlib.contextmanager
def federation(
    *,
    simulation: bool,
    num_supernodes: int = 2,
    flwr_home: Path | None = None,
    tls: TLSFiles | None = None,
    node_auth: bool = False,
    database: Path | None = None,
    keep_home: bool = False,
) -> Iterator[Federation]:
    """Start a SuperLink on 127.0.0.1 (simulation or deployment) and stop everything on exit.

    In simulation the SuperLink simulates ``num_supernodes`` clients (one CPU each); in deployment
    start SuperNodes with :meth:`Federation.start_supernode`.
    """
    home = Path(flwr_home) if flwr_home else Path(tempfile.mkdtemp(prefix="fedforget-flwr-"))
    env = flower_env(home)
    # Flower 1.42 serves the Control, Fleet and Runtime APIs on one HTTP port.
    port = free_port()
    control_port = fleet_port = port
    argv = [_bin("flower-superlink"), "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--disable-runtime-dependency-installation"]
    argv += ["--isolation", "subprocess"]
    if simulation:
        argv.append("--simulation")
    if tls is None:
        argv.append("--insecure")
    else:
        argv += ["--ssl-ca-certfile", str(tls.ca_cert), "--ssl-certfile", str(tls.server_cert)]
        argv += ["--ssl-keyfile", str(tls.server_key)]
    if node_auth:
        argv.append("--enable-supernode-auth")
    if database is not None:
        argv += ["--database", str(database)]
    options: dict[str, Any] = {}
    if simulation:
        # One CPU per simulated client, so two clients train at once on a 2-core machine.
        options = {"num-supernodes": num_supernodes, "backend.client-resources": {"num-cpus": 1}}
    _write_connection(home, control_port, options, tls)
    superlink = start_process("superlink", argv, env, home / "logs")
    fed = Federation(home, control_port, fleet_port, superlink, env, tls=tls, superlink_argv=argv)
    try:
        wait_for_port(control_port, superlink)
        yield fed
    finally:
        fed.stop()
        if not keep_home and flwr_home is None:
            shutil.rmtree(home, ignore_errors=True)


@dataclasses.dataclass(frozen=True)
class RunOutcome:
    run_id: int
    status: str
    seconds: float


def _flwr(fed: Federation, args: Sequence[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_bin("flwr"), *args],
        env=fed.env,
        cwd=str(PROJECT_ROOT),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        stdin=subprocess.DEVNULL,
    )


def run_config_arg(run_config: Mapping[str, Any]) -> str:
    """``--run-config`` text: ``key=value`` pairs with TOML values."""
    return " ".join(f"{k}={_toml_value(v)}" for k, v in run_config.items())


def submit_run(
    fed: Federation,
    run_config: Mapping[str, Any],
    *,
    app_dir: Path = PROJECT_ROOT,
    timeout_s: float = 1800.0,
    stream_to: IO[str] | None = None,
) -> RunOutcome:
    """``flwr run`` the app, stream its logs, and raise :class:`FlowerRunError` unless it completed."""
    start = time.monotonic()
    submitted = _flwr(
        fed,
        ["run", str(app_dir), CONNECTION, "--run-config", run_config_arg(run_config), "--format", "json"],
        timeout_s=120,
    )
    run_id = _parse_run_id(submitted.stdout)
    if submitted.returncode != 0 or run_id is None:
        raise FlowerRunError(
            f"flwr run could not submit the run (exit {submitted.returncode}):\n"
            f"{submitted.stdout[-3000:]}\n{submitted.stderr[-3000:]}"
        )
    status = _follow(fed, run_id, start + timeout_s, stream_to)
    seconds = time.monotonic() - start
    if status != "finished:completed":
        raise FlowerRunError(
            f"Flower run {run_id} ended with status '{status}'.\n{run_error_text(fed, run_id)}"
        )
    return RunOutcome(run_id, status, seconds)


def run_error_text(fed: Federation, run_id: int, max_lines: int = 40) -> str:
    """The end of the run's own log (where the ServerApp's traceback is), else the SuperLink's."""
    with contextlib.suppress(subprocess.TimeoutExpired, OSError):
        out = _flwr(fed, ["log", str(run_id), CONNECTION, "--show"], timeout_s=60).stdout
        lines = [line for line in out.splitlines() if line.strip()]
        if lines:
            return "--- run log (last lines) ---\n" + "\n".join(lines[-max_lines:])
    return "--- superlink log (last lines) ---\n" + fed.superlink.log_tail(max_lines)


def _parse_run_id(stdout: str) -> int | None:
    with contextlib.suppress(json.JSONDecodeError):
        doc = json.loads(stdout)
        if isinstance(doc, dict) and "run-id" in doc:
            return int(doc["run-id"])
    match = re.search(r'"run[-_]id"\s*:\s*"?(\d+)', stdout)
    return int(match.group(1)) if match else None


def run_status(fed: Federation, run_id: int) -> str:
    """The run's status as ``flwr ls`` reports it, e.g. ``running`` or ``finished:completed``."""
    out = _flwr(fed, ["ls", CONNECTION, "--run-id", str(run_id), "--format", "json"], timeout_s=60)
    with contextlib.suppress(json.JSONDecodeError, KeyError, IndexError, TypeError):
        doc = json.loads(out.stdout)
        return str(doc["runs"][0]["status"])
    return f"unknown ({out.stdout[-500:]} {out.stderr[-500:]})"


def _follow(fed: Federation, run_id: int, deadline: float, stream_to: IO[str] | None) -> str:
    """Stream the run's logs (``flwr log``) while polling its status until it finishes."""
    streamer = None
    if stream_to is not None:
        streamer = subprocess.Popen(
            [_bin("flwr"), "log", str(run_id), CONNECTION, "--stream"],
            env=fed.env,
            cwd=str(PROJECT_ROOT),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        _pump_in_background(streamer, stream_to)
    try:
        status = "unknown"
        while time.monotonic() < deadline:
            status = run_status(fed, run_id)
            if status.startswith("finished"):
                break
            if not fed.superlink.alive():
                return f"superlink died ({status})"
            time.sleep(2.0)  # each poll starts a `flwr` CLI process: keep it cheap on small machines
        else:
            _flwr(fed, ["stop", str(run_id), CONNECTION], timeout_s=60)
            return f"timed out ({status})"
        time.sleep(1.5)  # let the log stream drain
        return status
    finally:
        if streamer is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(streamer.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                streamer.wait(timeout=5)


def _pump_in_background(process: subprocess.Popen[str], sink: IO[str]) -> None:
    import threading

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            sink.write(line)
            sink.flush()

    threading.Thread(target=pump, daemon=True).start()
