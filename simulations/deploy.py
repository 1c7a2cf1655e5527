"""A TLS + node-authenticated Flower deployment on one machine: a SuperLink and N device SuperNodes.

    python -m simulations.certificates --out deploy/certs --nodes 2
    python -m simulations.deploy prepare --workdir deploy --certs deploy/certs --nodes 2 \\
        --set num-rounds=3 local-epochs=1
    fedforget withdraw --store deploy/device-0/requests.sqlite --partition-id 0 \\
        --config deploy/run-config.json --ids 12,40,77          # optional, before or during the run
    python -m simulations.deploy run --workdir deploy
    fedforget status --store deploy/device-0/requests.sqlite

``prepare`` resolves the run config once (``<workdir>/run-config.json``, the file devices give to
``fedforget withdraw --config``), copies what the SuperLink needs of ``--certs`` into
``<workdir>/superlink/certs/`` (``ca.crt``, ``server.crt``, ``server.key``: never the CA's private
key ``ca.key``, which stays in ``--certs``, the CA's folder, and is only needed to issue
certificates) and lays out one folder per device:

=============================  ================================================================
``device-<i>/requests.sqlite``  the device's durable request store (node config ``request-store``)
``device-<i>/flwr/``            the SuperNode's ``FLWR_HOME`` (installed apps)
``device-<i>/data/``            optional: the device's dataset folder (``FEDFORGET_DATA``), used
                                when it exists and the run config names no ``data-dir``
``device-<i>/node-<i>``         the device's authentication key pair (copied from ``--certs``)
=============================  ================================================================

``run`` starts a SuperLink with TLS (``--ssl-*``) and ``--enable-supernode-auth``, registers each
device's public key (``flwr supernode register``), starts one SuperNode per device with its own
node config (``partition-id``, ``num-partitions``, ``request-store``), ``--root-certificates`` and
``--auth-supernode-private-key``, waits until every device is online, submits the app
(``flwr run``), waits for the run to finish, and stops every process it started by PID (also on
errors and Ctrl-C). The same steps are a Python API for tests: :func:`prepare`, :func:`bring_up`,
:meth:`Deployment.submit`.

``simulations.launcher.Federation.start_supernode`` gives every SuperNode the SuperLink's
environment; devices need their own (``FLWR_HOME``, ``FEDFORGET_DATA``), so SuperNodes are started
here with :func:`start_supernode`, through the launcher's :func:`start_process` and added to the
federation's process list, so ``Federation.stop`` still stops them by PID.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from fedforget.config import ConfigError
from fedforget.data import DataError
from fedforget.records import RunRecord
from fedforget.splits import SplitError
from server.console import RoundTable
from simulations.certificates import CertificateError, DevCertificates, NodeKey
from simulations.launcher import (
    CONNECTION,
    PROJECT_ROOT,
    Federation,
    FlowerRunError,
    ManagedProcess,
    RunOutcome,
    TLSFiles,
    federation,
    free_port,
    run_config_arg,
    run_error_text,
    run_status,
    start_process,
)
from simulations.launcher import descendants as process_tree
from simulations.run import check_record, parse_assignments, resolve_run_config

PLAN_FILE = "deployment.json"
RUN_CONFIG_FILE = "run-config.json"


class DeploymentError(RuntimeError):
    """A deployment step that failed: bad plan, a key not accepted, a device that did not come online."""


@dataclasses.dataclass(frozen=True)
class EdgeDevice:
    """One device: its partition, folder, request store, key pair and (optional) data folder."""

    partition_id: int
    home: Path
    key: NodeKey

    @property
    def store(self) -> Path:
        return self.home / "requests.sqlite"

    @property
    def flwr_home(self) -> Path:
        return self.home / "flwr"

    @property
    def data_dir(self) -> Path | None:
        folder = self.home / "data"
        return folder if folder.is_dir() else None

    def node_config(self, num_partitions: int) -> dict[str, Any]:
        return {
            "partition-id": self.partition_id,
            "num-partitions": num_partitions,
            "request-store": str(self.store),
        }


@dataclasses.dataclass(frozen=True)
class DeploymentPlan:
    """What :func:`prepare` wrote: the certificates, the resolved run config, the devices."""

    workdir: Path
    certs: DevCertificates
    run_config: dict[str, Any]
    devices: tuple[EdgeDevice, ...]

    @property
    def run_config_file(self) -> Path:
        return self.workdir / RUN_CONFIG_FILE

    @property
    def server_certs(self) -> Path:
        """The SuperLink's certificate folder: CA certificate, its certificate and key (no CA key)."""
        return self.workdir / "superlink" / "certs"

    def server_tls(self) -> TLSFiles:
        folder = self.server_certs
        return TLSFiles(folder / "ca.crt", folder / "server.crt", folder / "server.key")

    @property
    def record_path(self) -> Path:
        return Path(self.run_config["run-dir"]) / str(self.run_config["run-id"])

    def withdraw_argv(self, device: EdgeDevice, *selection: str) -> list[str]:
        """The ``fedforget withdraw`` command for ``device``; ``selection`` e.g. ``("--ids", "1,2")``."""
        exe = Path(sys.executable).parent / "fedforget"
        return [
            str(exe),
            "withdraw",
            "--store",
            str(device.store),
            "--partition-id",
            str(device.partition_id),
            "--config",
            str(self.run_config_file),
            *selection,
        ]

    def status_argv(self, device: EdgeDevice, *extra: str) -> list[str]:
        return [
            str(Path(sys.executable).parent / "fedforget"),
            "status",
            "--store",
            str(device.store),
            *extra,
        ]


def prepare(
    workdir: Path | str,
    certs: DevCertificates | Path | str,
    num_devices: int,
    overrides: Mapping[str, Any] | None = None,
    *,
    force: bool = False,
) -> DeploymentPlan:
    """Resolve the run config, lay out ``num_devices`` device folders and copy in their keys.

    ``num-clients`` is set to ``num_devices``; ``run-dir`` defaults to ``<workdir>/runs``; a fixed
    ``run-id`` is chosen now so devices and the server agree on it. Unless ``data-dir`` is given,
    it stays empty so each device reads its own ``device-<i>/data`` (or ``FEDFORGET_DATA``, or
    ``../shared/datasets``). Raises :class:`DeploymentError` for a bad device count, too few node
    keys in ``certs``, or (unless ``force``) an existing plan.
    """
    if isinstance(num_devices, bool) or not isinstance(num_devices, int) or num_devices < 1:
        raise DeploymentError(f"num_devices must be an integer >= 1, got {num_devices!r}")
    loaded = certs if isinstance(certs, DevCertificates) else DevCertificates.load(certs)
    if len(loaded.nodes) < num_devices:
        raise DeploymentError(
            f"{loaded.out} holds {len(loaded.nodes)} node key(s) but {num_devices} devices were asked "
            f"for; regenerate with 'python -m simulations.certificates --out {loaded.out} "
            f"--nodes {num_devices} --force'"
        )
    folder = Path(workdir).expanduser().resolve()
    if (folder / PLAN_FILE).exists() and not force:
        raise DeploymentError(f"{folder / PLAN_FILE} exists; pass --force to prepare it again")
    values = dict(overrides or {})
    if "num-clients" in values and int(values["num-clients"]) != num_devices:
        raise DeploymentError(f"num-clients={values['num-clients']} disagrees with {num_devices} devices")
    values["num-clients"] = num_devices
    values.setdefault("run-dir", str(folder / "runs"))
    run_config = resolve_run_config(values)
    run_config["data-dir"] = str(values.get("data-dir", ""))
    server = DeploymentPlan(folder, loaded, run_config, ()).server_tls()
    server.ca_cert.parent.mkdir(parents=True, exist_ok=True)
    for src, dst in (
        (loaded.ca_cert, server.ca_cert),
        (loaded.server_cert, server.server_cert),
        (loaded.server_key, server.server_key),
    ):
        shutil.copy2(src, dst)  # keeps 0600 on the server's key; the CA key is not copied
    devices = []
    for i in range(num_devices):
        home = folder / f"device-{i}"
        home.mkdir(parents=True, exist_ok=True)
        key = NodeKey(home / loaded.nodes[i].private_key.name, home / loaded.nodes[i].public_key.name)
        for src, dst in (
            (loaded.nodes[i].private_key, key.private_key),
            (loaded.nodes[i].public_key, key.public_key),
        ):
            shutil.copy2(src, dst)  # keeps 0600 on the private key
        devices.append(EdgeDevice(i, home, key))
    plan = DeploymentPlan(folder, loaded, run_config, tuple(devices))
    plan.run_config_file.write_text(json.dumps(run_config, indent=1) + "\n")
    doc = {
        "certs": str(loaded.out),
        "run-config": str(plan.run_config_file),
        "devices": [
            {
                "partition-id": d.partition_id,
                "home": str(d.home),
                "request-store": str(d.store),
                "private-key": str(d.key.private_key),
                "public-key": str(d.key.public_key),
            }
            for d in devices
        ],
    }
    (folder / PLAN_FILE).write_text(json.dumps(doc, indent=1) + "\n")
    return plan


def load_plan(workdir: Path | str) -> DeploymentPlan:
    """The plan :func:`prepare` wrote into ``workdir``."""
    folder = Path(workdir).expanduser().resolve()
    try:
        doc = json.loads((folder / PLAN_FILE).read_text())
    except FileNotFoundError:
        raise DeploymentError(
            f"{folder} holds no {PLAN_FILE}; "
            f"run 'python -m simulations.deploy prepare --workdir {workdir} ...' first"
        ) from None
    devices = tuple(
        EdgeDevice(
            int(d["partition-id"]), Path(d["home"]), NodeKey(Path(d["private-key"]), Path(d["public-key"]))
        )
        for d in doc["devices"]
    )
    run_config = json.loads(Path(doc["run-config"]).read_text())
    return DeploymentPlan(folder, DevCertificates.load(doc["certs"]), run_config, devices)


def _flwr(fed: Federation, args: Sequence[str], timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "flwr"), *args],
        env=fed.env,
        cwd=str(PROJECT_ROOT),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        stdin=subprocess.DEVNULL,
    )


def _rows(path: Path) -> list[dict[str, Any]]:
    """The complete JSON lines of ``metrics.jsonl`` so far (a line being written is skipped)."""
    rows = []
    with contextlib.suppress(FileNotFoundError):
        for line in path.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                rows.append(json.loads(line))
    return rows


def _show(table: RoundTable, row: Mapping[str, Any]) -> None:
    """One metrics row on the console: a table line, or a one-line event."""
    if "event" not in row:
        table.print_row({**row, "phase": f"{row['phase']}{row.get('unlearn-round', '')}"})
    elif row["event"] == "request-received":
        table.print_event(
            f"withdrawal {', '.join(row['request-ids'])}: {row['num-forget']} samples; oracle judges "
            f"{row.get('b-t')} member / {row.get('b-f')} non-member before unlearning"
        )
    elif row["event"] in ("run-finished", "run-failed", "mask-rejected"):
        table.print_event(" ".join(f"{k}={v}" for k, v in row.items() if k not in ("phase",)))


def register_key(fed: Federation, public_key: Path) -> int:
    """``flwr supernode register <key.pub>``: the SuperLink accepts SuperNodes holding this key."""
    out = _flwr(fed, ["supernode", "register", str(public_key), CONNECTION, "--format", "json"])
    with contextlib.suppress(json.JSONDecodeError, KeyError, TypeError):
        return int(json.loads(out.stdout)["node-id"])
    raise DeploymentError(
        f"registering {public_key} failed (exit {out.returncode}):\n{out.stdout}{out.stderr}"
    )


def online_nodes(fed: Federation) -> dict[int, str]:
    """Node id -> status (``online``, ``registered``, ``offline``...) as ``flwr supernode list`` says."""
    out = _flwr(fed, ["supernode", "list", CONNECTION, "--format", "json"])
    try:
        return {int(n["node-id"]): str(n["status"]) for n in json.loads(out.stdout)["nodes"]}
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        raise DeploymentError(f"flwr supernode list failed:\n{out.stdout}{out.stderr}") from None


def start_supernode(
    fed: Federation,
    name: str,
    node_config: Mapping[str, Any],
    *,
    private_key: Path | None,
    flwr_home: Path,
    data_dir: Path | None = None,
    insecure: bool = False,
) -> ManagedProcess:
    """Start ``flower-supernode`` against ``fed`` with its own environment; added to ``fed.supernodes``.

    ``insecure=True`` connects without TLS (a TLS SuperLink must refuse it); otherwise the node
    trusts ``fed.tls.ca_cert``.
    """
    if fed.tls is None and not insecure:
        raise DeploymentError("the SuperLink runs without TLS; start SuperNodes with insecure=True")
    env = dict(fed.env)
    env["FLWR_HOME"] = str(flwr_home)
    if data_dir is not None:
        env["FEDFORGET_DATA"] = str(data_dir)
    text = " ".join(f"{k}={json.dumps(v)}" for k, v in node_config.items())
    argv = [
        str(Path(sys.executable).parent / "flower-supernode"),
        "--superlink",
        f"127.0.0.1:{fed.fleet_port}",
    ]
    argv += ["--node-config", text, "--host", "127.0.0.1", "--port", str(free_port())]
    if insecure:
        argv.append("--insecure")
    else:
        assert fed.tls is not None
        argv += ["--root-certificates", str(fed.tls.ca_cert)]
    if private_key is not None:
        argv += ["--auth-supernode-private-key", str(private_key)]
    flwr_home.mkdir(parents=True, exist_ok=True)
    node = start_process(name, argv, env, fed.log_dir)
    fed.supernodes.append(node)
    return node


@dataclasses.dataclass
class Deployment:
    """A running SuperLink (TLS + node auth) and the SuperNodes of a plan's devices."""

    plan: DeploymentPlan
    fed: Federation
    node_ids: dict[int, int] = dataclasses.field(default_factory=dict)  # partition id -> node id
    processes: dict[int, ManagedProcess] = dataclasses.field(default_factory=dict)
    outcome: RunOutcome | None = None

    def register(self, device: EdgeDevice) -> int:
        node_id = register_key(self.fed, device.key.public_key)
        self.node_ids[device.partition_id] = node_id
        return node_id

    def start(self, device: EdgeDevice) -> ManagedProcess:
        node = start_supernode(
            self.fed,
            f"device-{device.partition_id}",
            device.node_config(len(self.plan.devices)),
            private_key=device.key.private_key,
            flwr_home=device.flwr_home,
            data_dir=device.data_dir,
        )
        self.processes[device.partition_id] = node
        return node

    def wait_online(self, timeout_s: float = 120.0) -> None:
        """Wait until every registered device's SuperNode is online; raise with its log if one died."""
        deadline = time.monotonic() + timeout_s
        while True:
            for pid, process in self.processes.items():
                if not process.alive():
                    raise DeploymentError(f"device {pid}'s SuperNode exited:\n{process.log_tail()}")
            status = online_nodes(self.fed)
            waiting = [p for p, n in self.node_ids.items() if status.get(n) != "online"]
            if not waiting:
                return
            if time.monotonic() > deadline:
                raise DeploymentError(f"devices {waiting} not online after {timeout_s:.0f}s")
            time.sleep(1.0)

    def submit(
        self, *, timeout_s: float = 3600, stream_to: IO[str] | None = None, check_every_s: float = 30.0
    ) -> RunRecord:
        """``flwr run`` the plan's run config, wait for it, return the checked run record.

        Waiting watches the run record (``run-finished`` / ``run-failed`` rows in ``metrics.jsonl``)
        and asks ``flwr ls`` only every ``check_every_s`` seconds and at the end: each ``flwr`` call
        starts a Python process, which on a 2-core device competes with the run itself.
        ``stream_to`` receives the server's per-round table as the rows appear. Raises
        :class:`FlowerRunError` unless the run's final status is ``finished:completed``.
        """
        start = time.monotonic()
        submitted = _flwr(
            self.fed,
            ["run", str(PROJECT_ROOT), CONNECTION, "--run-config", run_config_arg(self.plan.run_config)]
            + ["--format", "json"],
            timeout_s=300,
        )
        try:
            run_id = int(json.loads(submitted.stdout)["run-id"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            raise FlowerRunError(
                f"flwr run could not submit the run (exit {submitted.returncode}):\n"
                f"{submitted.stdout[-3000:]}\n{submitted.stderr[-3000:]}"
            ) from None
        record = RunRecord(self.plan.record_path)
        table = RoundTable(record.path, stream_to) if stream_to is not None else None
        status = self._wait(run_id, record, table, start + timeout_s, check_every_s)
        self.outcome = RunOutcome(run_id, status, time.monotonic() - start)
        if status != "finished:completed":
            raise FlowerRunError(
                f"Flower run {run_id} ended with status '{status}'.\n{run_error_text(self.fed, run_id)}"
            )
        check_record(record, int(self.plan.run_config["num-rounds"]))
        return record

    def _wait(
        self, run_id: int, record: RunRecord, table: RoundTable | None, deadline: float, check_every_s: float
    ) -> str:
        shown, last_check = 0, time.monotonic()

        def show_new_rows() -> list[dict[str, Any]]:
            nonlocal shown
            rows = _rows(record.path / "metrics.jsonl")
            if table is not None:
                for row in rows[shown:]:
                    _show(table, row)
            shown = len(rows)
            return rows

        try:
            while time.monotonic() < deadline:
                if not self.fed.superlink.alive():
                    return "superlink died"
                rows = show_new_rows()
                ended = any(r.get("event") in ("run-finished", "run-failed") for r in rows)
                if ended or time.monotonic() - last_check > check_every_s:
                    status = run_status(self.fed, run_id)
                    last_check = time.monotonic()
                    if status.startswith("finished"):
                        return status
                time.sleep(1.0)
            _flwr(self.fed, ["stop", str(run_id), CONNECTION])
            return f"timed out ({run_status(self.fed, run_id)})"
        finally:
            show_new_rows()  # rows written while the status was being asked for

    def pids(self) -> list[int]:
        """PIDs of every process this deployment started (SuperLink first)."""
        return [self.fed.superlink.pid] + [p.pid for p in self.fed.supernodes]


def _start_time(pid: int) -> str | None:
    """The process's start time (``/proc/PID/stat`` field 22), or None if it is gone or a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] == "Z" else fields[19]


def descendants(pids: Sequence[int]) -> dict[int, str]:
    """Every live process below ``pids`` (:func:`simulations.launcher.descendants`), as PID -> start time.

    The SuperLink starts ``flower-superexec`` (and it the ServerApp) in a session of its own, and
    SuperNodes start ``flwr-clientapp`` processes, so stopping process groups can leave them behind.
    The start time tells a leftover from a later process that reuses its PID.
    """
    found: dict[int, str] = {}
    for root in pids:
        for pid in process_tree(root):
            started = _start_time(pid)
            if started is not None:
                found[pid] = started
    return found


def _kill_leftovers(processes: Mapping[int, str]) -> None:
    """SIGKILL those of ``processes`` (PID -> start time) still running after the orderly stop."""
    for pid, started in processes.items():
        if _start_time(pid) == started:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def bring_up(
    plan: DeploymentPlan, *, start_devices: bool = True, wait_s: float = 120.0
) -> Iterator[Deployment]:
    """Start the SuperLink (TLS, node auth), register and start every device; stop all by PID on exit."""
    tls = plan.server_tls()
    home = plan.workdir / "superlink"
    below: dict[int, str] = {}
    try:
        with federation(simulation=False, tls=tls, node_auth=True, flwr_home=home) as fed:
            deployment = Deployment(plan, fed)
            try:
                if start_devices:
                    for device in plan.devices:
                        deployment.register(device)
                        deployment.start(device)
                    deployment.wait_online(wait_s)
                yield deployment
            finally:
                below = descendants(deployment.pids())
    finally:
        _kill_leftovers(below)


def _cmd_prepare(args: argparse.Namespace) -> int:
    plan = prepare(args.workdir, args.certs, args.nodes, parse_assignments(args.set), force=args.force)
    print(f"run config        {plan.run_config_file}  (run id {plan.run_config['run-id']})")
    print(f"run record        {plan.record_path}")
    for device in plan.devices:
        print(f"device {device.partition_id}          {device.home}  store {device.store.name}")
    print("withdraw on a device, e.g.:")
    print("  " + " ".join(plan.withdraw_argv(plan.devices[0], "--class", "3")))
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    plan = load_plan(args.workdir)
    # `kill PID` / a timeout must stop the federation too: turn SIGTERM into an exception that
    # unwinds through bring_up's cleanup.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    with bring_up(plan) as deployment:
        print(
            f"[deploy] SuperLink https://127.0.0.1:{deployment.fed.fleet_port} "
            f"pid {deployment.fed.superlink.pid}"
        )
        for pid, node_id in deployment.node_ids.items():
            print(f"[deploy] device {pid}: node {node_id}, pid {deployment.processes[pid].pid}, online")
        pids = deployment.pids()
        record = deployment.submit(timeout_s=args.timeout, stream_to=sys.stdout)
    print(f"[deploy] stopped pids {' '.join(map(str, pids))}")
    print(f"[deploy] logs: {plan.workdir / 'superlink' / 'logs'}")
    print(f"[deploy] run record: {record.path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m simulations.deploy",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("prepare", help="resolve the run config and lay out the device folders")
    p.add_argument("--workdir", required=True, type=Path)
    p.add_argument("--certs", required=True, type=Path, help="folder written by simulations.certificates")
    p.add_argument("--nodes", required=True, type=int, help="number of devices")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="run-config values")
    p.add_argument("--force", action="store_true", help="prepare an existing workdir again")
    p.set_defaults(handler=_cmd_prepare)
    r = commands.add_parser("run", help="bring up SuperLink + devices, run, stop everything by PID")
    r.add_argument("--workdir", required=True, type=Path)
    r.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for the run")
    r.set_defaults(handler=_cmd_run)
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except (DeploymentError, CertificateError, ConfigError, DataError, SplitError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except FlowerRunError as error:
        print(f"error: the Flower run failed: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
