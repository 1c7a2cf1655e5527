"""The device's request store: owner-only files, and the run config the device learns from its run.

The ClientApp is called directly (a real handler, a real SQLite store); ``fedforget withdraw`` is
the real command, run in-process through its ``main``.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from clients.app import app as client_app
from fedforget.cli import NO_RUN_CONFIG
from fedforget.cli import main as cli_main
from fedforget.client_data import ClientData
from fedforget.config import RunConfig
from fedforget.request_store import RequestStore

# the deployment of the issue: 2 devices, while the config's default is num-clients=5
RUN = RunConfig.from_mapping({"num-clients": 2, "model": "mlp", "seed": 3, "run-id": "edge-demo"})


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_the_store_and_its_wal_files_are_readable_by_the_owner_only(tmp_path: Path) -> None:
    old_umask = os.umask(0o022)  # the usual umask, under which files are created 0644
    try:
        store = RequestStore(tmp_path / "dev0.sqlite")
        store.add("samples", [3, 5], owned_ids=np.arange(10), request_id="wd-a")
        with sqlite3.connect(store.path) as reader:  # keeps -wal / -shm in place while we look
            reader.execute("SELECT count(*) FROM requests").fetchone()
            files = sorted(p.name for p in tmp_path.iterdir())
            assert files == ["dev0.sqlite", "dev0.sqlite-shm", "dev0.sqlite-wal"]
            assert {f: _mode(tmp_path / f) for f in files} == dict.fromkeys(files, 0o600)
        # a store an older version created 0644 is narrowed when it is next opened
        old = tmp_path / "old.sqlite"
        sqlite3.connect(old).close()
        os.chmod(old, 0o644)
        RequestStore(old)
        assert _mode(old) == 0o600
    finally:
        os.umask(old_umask)


def _query_requests(store: Path, partition_id: int) -> None:
    """What the server's first poll does on a device: the ClientApp runs with the run's config."""
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 0
    context = Context(
        run_id=1,
        node_id=7,
        node_config={"partition-id": partition_id, "num-partitions": 2, "request-store": str(store)},
        state=RecordDict(),
        run_config=RUN.to_dict(),
    )
    msg = Message(
        RecordDict({"config": ConfigRecord({"server-round": 1, "model": "mlp", "run-id": "edge-demo"})}),
        dst_node_id=7,
        message_type="query.requests",
    )
    assert not client_app(msg, context).has_error()


def test_withdraw_uses_the_run_config_the_device_learned_from_its_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "dev0.sqlite"
    argv = ["withdraw", "--store", str(store), "--partition-id", "0", "--class", "3"]
    # before the device took part in a run it cannot know which samples are its own
    assert cli_main(argv) == 2
    assert capsys.readouterr().err.startswith(f"error: {NO_RUN_CONFIG}")
    assert not store.exists()  # nothing was stored

    _query_requests(store, partition_id=0)
    assert RequestStore(store).run_config()["num-clients"] == 2  # type: ignore[index]
    assert cli_main(argv) == 0
    out = capsys.readouterr()
    assert "using the run config of run edge-demo" in out.err
    (stored,) = RequestStore(store).all()
    part = ClientData.for_partition(RUN, 0)
    expected = part.train_ids[part.y_train == 3]
    assert stored.request_id == out.out.strip() and stored.ids.tolist() == sorted(expected.tolist())
    default = ClientData.for_partition(RunConfig.from_mapping({"seed": 3}), 0)  # num-clients=5
    assert stored.ids.size != int((default.y_train == 3).sum())  # what the device used to withdraw

    # the store belongs to partition 0: a withdrawal for another partition is refused
    assert cli_main(["withdraw", "--store", str(store), "--partition-id", "1", "--ids", "4"]) == 2
    assert "is the store of partition 0" in capsys.readouterr().err
