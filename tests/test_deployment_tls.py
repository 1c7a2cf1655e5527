"""A real deployment on 127.0.0.1: SuperLink with TLS and SuperNode authentication, three devices.

One device withdraws a class with the real ``fedforget withdraw`` command before the run: the
server finds it before the first training round, so the model never learned those samples and the
receipt says so (``excluded-before-training``). Another device's request comes during the run (the
run config's schedule, round 2): the server unlearns it and sends the receipt. ``fedforget status``
on each device shows its request completed with its receipt; after the run a device withdraws with
no ``--config`` (it kept the run's). An unregistered key and an ``--insecure`` SuperNode are turned
away. Every process started is gone afterwards.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from fedforget.client_data import ClientData
from fedforget.config import RunConfig
from simulations import deploy, launcher
from simulations.certificates import generate, write_node_key
from simulations.deploy import (
    DeploymentError,
    bring_up,
    descendants,
    load_plan,
    online_nodes,
    prepare,
    start_supernode,
)
from simulations.launcher import ManagedProcess
from tests.ports import ports_from

RUN = {
    "num-rounds": 2,
    "local-epochs": 1,
    "num-shadows": 2,
    "shadow-epochs": 1,
    "unlearn-rounds": 1,
    "forsaken-steps": 4,
    "retain-samples": 64,
    "withdrawals": "2:0:class:3",
}


@pytest.fixture(autouse=True)
def _own_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    free_port = ports_from(39200, 39249)
    monkeypatch.setattr(launcher, "free_port", free_port)
    monkeypatch.setattr(deploy, "free_port", free_port)


def _cli(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state == "Z"  # exited, waiting to be reaped by its (foreign) parent


@pytest.mark.slow
def test_tls_node_auth_deployment_withdrawal_end_to_end(tmp_path: Path) -> None:
    certs = generate(tmp_path / "certs", nodes=3)
    plan = prepare(tmp_path / "deploy", certs, 3, RUN)
    device = plan.devices[1]

    withdrawn = _cli(plan.withdraw_argv(device, "--class", "3"))
    assert withdrawn.returncode == 0, withdrawn.stderr
    request_id = withdrawn.stdout.strip()
    assert request_id

    intruder_key = write_node_key(tmp_path / "intruder" / "node-x")
    with bring_up(plan) as deployment:
        fed = deployment.fed
        registered = set(deployment.node_ids.values())
        assert len(registered) == 3
        # A SuperNode whose key was never registered is refused.
        unregistered = start_supernode(
            fed,
            "unregistered",
            {"partition-id": 0, "num-partitions": 3},
            private_key=intruder_key.private_key,
            flwr_home=tmp_path / "intruder" / "flwr",
        )
        # A SuperNode without TLS cannot connect to the TLS SuperLink.
        insecure = start_supernode(
            fed,
            "insecure",
            {"partition-id": 0, "num-partitions": 3},
            private_key=None,  # (Flower itself refuses to send a node key over plain text)
            flwr_home=tmp_path / "insecure" / "flwr",
            insecure=True,
        )
        # Both are turned away before the run starts; then they are stopped (by PID) to save CPU.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (
            "Failed to activate SuperNode" in unregistered.log_tail(400)
            and "Connection attempt failed" in insecure.log_tail(400)
        ):
            time.sleep(1.0)
        assert "Failed to activate SuperNode" in unregistered.log_tail(400)
        assert "No SuperNode found with the given public key" in fed.superlink.log_tail(400)
        assert "Connection attempt failed" in insecure.log_tail(400)
        for intruder in (unregistered, insecure):
            assert "SuperNode ID" not in intruder.log_tail(400)  # never given a node id
            intruder.stop()
            assert not intruder.alive()

        record = deployment.submit(timeout_s=900)

        nodes = online_nodes(fed)
        assert set(nodes) == registered and set(nodes.values()) == {"online"}
        started = deployment.pids()
        below = descendants(started)
    deadline = time.monotonic() + 10
    while not all(_gone(p) for p in [*started, *below]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [p for p in [*started, *below] if not _gone(p)] == []
    for pid in started:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, signal.SIG_DFL)

    # The run record: device 1's request (filed before the run) reached the server from device 1
    # before any training, so nothing was unlearned for it; device 0's (round 2) was unlearned.
    withdrawals = {w["request-id"]: w for w in record.read_json("withdrawals.json")["requests"]}
    scheduled = "r2-c0-class-3"
    assert set(withdrawals) == {request_id, scheduled}
    entry = withdrawals[request_id]
    assert entry["client"] == device.partition_id and entry["grain"] == "class"
    assert entry["outcome"] == "excluded-before-training"
    receipt = entry["receipt"]
    assert receipt["model-hash-before"] == receipt["model-hash-after"] and receipt["unlearn-rounds"] == 0
    later = withdrawals[scheduled]
    assert later["client"] == 0 and later["outcome"].startswith("unlearned")
    assert later["receipt"]["model-hash-before"] != later["receipt"]["model-hash-after"]
    rows = record.metrics()
    excluded = [r for r in rows if r.get("event") == "excluded-before-training"]
    assert [(r["round"], r["request-ids"]) for r in excluded] == [(1, [request_id])]
    received = [r for r in rows if r.get("event") == "request-received"]
    assert [(r["round"], r["request-ids"]) for r in received] == [(1, [scheduled])]  # polled in round 2
    unlearned = [r for r in rows if r.get("phase") == "unlearn" and "masks-accepted" in r]
    assert unlearned and unlearned[0]["masks-accepted"] == 1 and unlearned[0]["mask-nonzero"] > 0
    assert all(r["request-ids"] == [scheduled] for r in unlearned)
    assert [r["round"] for r in rows if r.get("phase") == "train"] == [1, 2]
    assert all(r["clients"] == 3 and r["failures"] == 0 for r in rows if r.get("phase") == "train")
    # Every receipt's hashes are recomputed from the record's checkpoints.
    verified = _cli([plan.status_argv(device)[0], "verify", str(record.path)])
    assert verified.returncode == 0 and verified.stdout.startswith("ok: 4 model hashes"), verified

    # Each device's own view: completed, with the receipt the server sent.
    for holder, rid, server_entry in ((device, request_id, entry), (plan.devices[0], scheduled, later)):
        status = _cli(plan.status_argv(holder, "--json"))
        assert status.returncode == 0, status.stderr
        (stored,) = json.loads(status.stdout)
        assert stored["request-id"] == rid and stored["state"] == "completed"
        assert stored["num-ids"] == server_entry["num-ids"] > 0
        assert stored["receipt"]["model-hash-after"] == server_entry["receipt"]["model-hash-after"]
        assert stored["detail"] == server_entry["outcome"]
    text = _cli(plan.status_argv(device)).stdout
    assert "completed" in text and "receipt: excluded-before-training: withdrawn before" in text
    # Device 2 holds no request; it kept the run's config, so it withdraws without --config.
    third = plan.devices[2]
    assert json.loads(_cli(plan.status_argv(third, "--json")).stdout) == []
    argv = plan.withdraw_argv(third, "--class", "5")
    bare = _cli(argv[: argv.index("--config")] + ["--class", "5"])
    assert bare.returncode == 0 and "using the run config of run" in bare.stderr, bare.stderr
    (stored,) = json.loads(_cli(plan.status_argv(third, "--json")).stdout)
    part = ClientData.for_partition(RunConfig.from_mapping(plan.run_config), 2)
    assert stored["num-ids"] == int((part.y_train == 5).sum()) > 0


def test_prepare_lays_out_one_folder_per_device(tmp_path: Path) -> None:
    certs = generate(tmp_path / "certs", nodes=3)
    plan = prepare(tmp_path / "w", certs, 2, {"num-rounds": 1})
    assert plan.run_config["num-clients"] == 2 and plan.run_config["num-rounds"] == 1
    assert plan.run_config["run-dir"] == str((tmp_path / "w" / "runs").resolve())
    assert plan.run_config["data-dir"] == ""  # each device reads its own data folder
    assert json.loads(plan.run_config_file.read_text()) == plan.run_config
    for i, device in enumerate(plan.devices):
        assert device.home == (tmp_path / "w" / f"device-{i}").resolve()
        assert device.key.private_key.read_bytes() == certs.nodes[i].private_key.read_bytes()
        assert oct(device.key.private_key.stat().st_mode & 0o777) == "0o600"
        assert device.node_config(2) == {
            "partition-id": i,
            "num-partitions": 2,
            "request-store": str(device.store),
        }
        assert device.data_dir is None
    # the SuperLink's folder holds its certificate and key and the CA certificate, not the CA key
    server = plan.server_certs
    assert sorted(p.name for p in server.iterdir()) == ["ca.crt", "server.crt", "server.key"]
    assert oct(plan.server_tls().server_key.stat().st_mode & 0o777) == "0o600"
    assert plan.server_tls().ca_cert.read_bytes() == certs.ca_cert.read_bytes()
    assert [p for p in (tmp_path / "w").rglob("*") if p.name == certs.ca_key.name] == []
    (plan.devices[1].home / "data").mkdir()
    assert plan.devices[1].data_dir == plan.devices[1].home / "data"
    assert load_plan(tmp_path / "w") == plan
    argv = plan.withdraw_argv(plan.devices[0], "--class", "3")
    assert argv[1:] == [
        "withdraw",
        "--store",
        str(plan.devices[0].store),
        "--partition-id",
        "0",
        "--config",
        str(plan.run_config_file),
        "--class",
        "3",
    ]


@pytest.mark.parametrize(
    ("devices", "overrides", "message"),
    [
        (0, {}, "num_devices must be an integer >= 1"),
        (4, {}, "holds 3 node key"),
        (2, {"num-clients": 3}, "disagrees with 2 devices"),
    ],
)
def test_prepare_rejects_bad_plans(tmp_path: Path, devices: int, overrides: dict, message: str) -> None:
    certs = generate(tmp_path / "certs", nodes=3)
    with pytest.raises(DeploymentError, match=message):
        prepare(tmp_path / "w", certs, devices, overrides)


def test_prepare_does_not_overwrite_a_plan_and_load_names_what_is_missing(tmp_path: Path) -> None:
    certs = generate(tmp_path / "certs", nodes=1)
    prepare(tmp_path / "w", certs, 1)
    with pytest.raises(DeploymentError, match="exists; pass --force"):
        prepare(tmp_path / "w", certs, 1)
    prepare(tmp_path / "w", certs, 1, force=True)
    with pytest.raises(DeploymentError, match="holds no deployment.json"):
        load_plan(tmp_path / "elsewhere")


def test_descendants_finds_grandchildren(tmp_path: Path) -> None:
    # A shell that starts a sleeping grandchild in a new session (as Flower's SuperExec is started).
    child = subprocess.Popen(
        ["sh", "-c", "setsid sleep 30 & echo $!; wait"], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    grandchild = int(child.stdout.readline())
    try:
        assert grandchild in descendants([child.pid])
    finally:
        os.kill(grandchild, signal.SIGKILL)
        child.wait(timeout=10)
    assert child.pid not in descendants([os.getpid() + 10_000_000])


def _environment_of(node: ManagedProcess, timeout_s: float = 10.0) -> list[bytes]:
    """The environment ``node`` was started with, from ``/proc/PID/environ``.

    Popen returns once ``execve`` has closed the close-on-exec pipe, which is a moment before the
    new program's stack (and so its environment) exists: in that window, and after the process
    exits, the file reads empty. Wait for it, and say why if the process died.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert node.alive(), f"{node.name} exited at once:\n{node.log_tail()}"
        raw = Path(f"/proc/{node.pid}/environ").read_bytes()
        if raw:
            return raw.split(b"\0")
        time.sleep(0.05)
    raise AssertionError(f"{node.name}'s environment stayed empty for {timeout_s:.0f} s")


@pytest.mark.slow
def test_each_supernode_gets_its_own_flwr_home_and_data_folder(tmp_path: Path) -> None:
    from simulations.launcher import federation

    with federation(simulation=False) as fed:
        node = start_supernode(
            fed,
            "device-x",
            {"partition-id": 0, "num-partitions": 1},
            private_key=None,
            flwr_home=tmp_path / "flwr",
            data_dir=tmp_path / "data",
            insecure=True,
        )
        environ = _environment_of(node)
        assert f"FLWR_HOME={tmp_path / 'flwr'}".encode() in environ
        assert f"FEDFORGET_DATA={tmp_path / 'data'}".encode() in environ
        assert f"FLWR_HOME={fed.flwr_home}".encode() not in environ
        assert node in fed.supernodes  # stopped with the federation
    assert not node.alive()
    with pytest.raises(DeploymentError, match="without TLS"):
        start_supernode(fed, "x", {}, private_key=None, flwr_home=tmp_path / "f2")
