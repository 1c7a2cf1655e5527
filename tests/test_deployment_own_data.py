"""A TLS + node-authenticated deployment whose devices hold only their own data (``client-data = own``).

Three SuperNodes, each started with ``--node-config "data='.../mine.csv'"`` (a file written from
scikit-learn's digits, disjoint from the others); the SuperLink / ServerApp side gets only the server's
auxiliary file as ``dataset``. No process reads another party's file. Device 0 withdraws its class-3
samples with ``fedforget withdraw --data`` before the run (excluded before training, with a receipt);
device 1's scheduled request comes at round 2 and is unlearned and receipted.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from fedforget.client_data import ClientData, OwnData
from simulations import deploy, launcher
from simulations.certificates import generate
from simulations.deploy import bring_up, prepare, start_supernode
from tests.ports import ports_from
from tests.test_own_data import digits_files

RUN = {
    "client-data": "own",
    "num-rounds": 2,
    "local-epochs": 1,
    "num-shadows": 2,
    "shadow-epochs": 1,
    "unlearn-rounds": 1,
    "forsaken-steps": 4,
    "retain-samples": 64,
    "withdrawals": "2:1:class:4",
}


@pytest.fixture(autouse=True)
def _own_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    free_port = ports_from(39300, 39399)
    monkeypatch.setattr(launcher, "free_port", free_port)
    monkeypatch.setattr(deploy, "free_port", free_port)


def _cli(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.slow
def test_own_data_devices_with_tls_and_node_auth_unlearn_a_withdrawal(tmp_path: Path) -> None:
    server_file, device_files = digits_files(tmp_path / "files")
    certs = generate(tmp_path / "certs", nodes=3)
    plan = prepare(tmp_path / "deploy", certs, 3, {**RUN, "dataset": f"csv:{server_file}"})
    assert plan.run_config["dataset"] == f"csv:{server_file}" and plan.run_config["client-data"] == "own"

    # Device 0 withdraws its class-3 samples before the run, by its own ids, from its own file.
    first = plan.devices[0]
    withdrawn = _cli(plan.withdraw_argv(first, "--data", str(device_files[0]), "--class", "3"))
    assert withdrawn.returncode == 0, withdrawn.stderr
    early_request = withdrawn.stdout.strip()

    with bring_up(plan, start_devices=False) as deployment:
        for device in plan.devices:
            deployment.register(device)
            node_config = {**device.node_config(3), "data": str(device_files[device.partition_id])}
            deployment.processes[device.partition_id] = start_supernode(
                deployment.fed,
                f"device-{device.partition_id}",
                node_config,
                private_key=device.key.private_key,
                flwr_home=device.flwr_home,
            )
        deployment.wait_online(120)
        record = deployment.submit(timeout_s=900)

    own = {
        pid: ClientData.from_file(OwnData(str(path)), pid, num_classes=10, input_shape=(64,))
        for pid, path in enumerate(device_files)
    }
    withdrawals = {w["client"]: w for w in record.read_json("withdrawals.json")["requests"]}
    assert set(withdrawals) == {0, 1}
    early, later = withdrawals[0], withdrawals[1]
    assert early["request-id"] == early_request and early["outcome"] == "excluded-before-training"
    assert early["global-ids"] == own[0].train_ids[own[0].y_train == 3].tolist()  # the device's own ids
    assert later["outcome"].startswith("unlearned")
    assert later["global-ids"] == own[1].train_ids[own[1].y_train == 4].tolist()
    receipt = later["receipt"]
    assert receipt["model-hash-before"] != receipt["model-hash-after"]
    rows = record.metrics()
    unlearned = [r for r in rows if r.get("phase") == "unlearn" and "masks-accepted" in r]
    assert unlearned and unlearned[0]["masks-accepted"] == 1 and unlearned[0]["mask-nonzero"] > 0
    assert all(r["clients"] == 3 and r["failures"] == 0 for r in rows if r.get("phase") == "train")
    split = record.read_json("split.json")
    assert split["clients"] == [] and split["client-data"] == "own"  # the server holds no client part
    assert len(split["aux-ids"]) + len(split["test-ids"]) == 450  # exactly its own file's rows

    # Both devices hold their receipt.
    for device, request in ((plan.devices[0], early), (plan.devices[1], later)):
        status = _cli(plan.status_argv(device, "--json"))
        assert status.returncode == 0, status.stderr
        (stored,) = json.loads(status.stdout)
        assert stored["request-id"] == request["request-id"] and stored["state"] == "completed"
        assert np.asarray(stored["num-ids"]) == request["num-ids"] > 0
    assert json.loads(_cli(plan.status_argv(plan.devices[2], "--json")).stdout) == []
