"""Faults with real processes: a SuperNode killed mid-unlearning, then the SuperLink; bad requests.

Each test starts a SuperLink and two SuperNodes on 127.0.0.1 (insecure; TLS is tested elsewhere),
each device with its own durable request store, and files withdrawals through the real
``fedforget withdraw`` command. Processes are killed with SIGKILL (no clean-up runs) by PID.
The finer state-machine cases run in-process in tests/test_ledger.py.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fedforget.client_data import ClientData
from fedforget.config import RunConfig
from fedforget.request_store import RequestStore
from server.ledger import DELIVERED, Ledger
from simulations.launcher import Federation, FlowerRunError, federation, run_status, submit_run
from simulations.run import check_record, resolve_run_config

pytestmark = pytest.mark.slow

FEDFORGET = str(Path(sys.executable).parent / "fedforget")


def _run_config(tmp: Path) -> dict[str, Any]:
    return resolve_run_config(
        {
            "num-clients": 2,
            "num-rounds": 2,
            "local-epochs": 1,
            "max-train-samples": 600,
            "num-shadows": 2,
            "shadow-epochs": 2,
            "unlearn-rounds": 1,
            "forsaken-steps": 3,
            "run-dir": str(tmp / "runs"),
            "ledger": str(tmp / "server" / "ledger.sqlite"),
        },
        None,
    )


def _withdraw_argv(tmp: Path, run_config: dict[str, Any], partition: int, *args: str) -> list[str]:
    """The device's own command, as a user runs it."""
    config_file = tmp / "config.json"
    config_file.write_text(json.dumps(run_config))
    store = str(tmp / f"dev{partition}.sqlite")
    argv = [FEDFORGET, "withdraw", "--store", store, "--partition-id", str(partition)]
    return [*argv, "--config", str(config_file), *args]


def _withdraw(
    tmp: Path, run_config: dict[str, Any], partition: int, *args: str
) -> subprocess.CompletedProcess[str]:
    argv = _withdraw_argv(tmp, run_config, partition, *args)
    return subprocess.run(argv, capture_output=True, text=True, timeout=300)


def _start_nodes(fed: Federation, tmp: Path) -> list:
    return [fed.start_supernode(p, 2, {"request-store": str(tmp / f"dev{p}.sqlite")}) for p in range(2)]


def _rows(record_dir: Path) -> list[dict[str, Any]]:
    rows = []
    path = record_dir / "metrics.jsonl"
    if path.exists():
        for line in path.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):  # a line being written
                rows.append(json.loads(line))
    return rows


def _in_background(fed: Federation, run_config: dict[str, Any]) -> tuple[threading.Thread, dict[str, Any]]:
    result: dict[str, Any] = {}

    def submit() -> None:
        try:
            result["outcome"] = submit_run(fed, run_config, timeout_s=600)
        except FlowerRunError as error:
            result["error"] = error

    thread = threading.Thread(target=submit, daemon=True)
    thread.start()
    return thread, result


def _wait(
    what: str, ready: Callable[[], bool], fed: Federation, thread: threading.Thread, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        if not thread.is_alive():
            break
        time.sleep(0.5)
    logs = "\n".join(p.log_tail(15) for p in [fed.superlink, *fed.supernodes])
    raise AssertionError(f"timed out waiting for {what}\n{logs}")


def _ledger_state(path: Path, request_id: str) -> str | None:
    if not path.exists():
        return None
    try:
        with sqlite3.connect(path, timeout=5) as db:
            row = db.execute("SELECT state FROM requests WHERE request_id = ?", (request_id,)).fetchone()
    except sqlite3.Error:
        return None
    return row[0] if row else None


def test_a_device_and_then_the_superlink_die_and_the_request_is_unlearned_exactly_once(
    tmp_path: Path,
) -> None:
    """One story, to keep process time down: (1) the device holding a withdrawal is killed during its
    unlearning round and restarts (new node id, same store); (2) once its request is unlearned and
    the receipt delivered, the SuperLink (with the ServerApp) is killed, restarted on the same
    database, and the run is resubmitted with ``resume=1``."""
    run_config = _run_config(tmp_path)
    part = ClientData.for_partition(RunConfig.from_mapping(run_config), 0)
    filed = _withdraw(tmp_path, run_config, 0, "--ids", ",".join(map(str, part.train_ids[:6])))
    assert filed.returncode == 0, filed.stderr
    request_id = filed.stdout.strip()
    record_dir = Path(run_config["run-dir"]) / run_config["run-id"]
    ledger_path = Path(run_config["ledger"])
    with federation(simulation=False, database=tmp_path / "superlink.db") as fed:
        nodes = _start_nodes(fed, tmp_path)
        thread, result = _in_background(fed, run_config)
        sent = lambda: any(r.get("event") == "unlearn-round-sent" for r in _rows(record_dir))  # noqa: E731
        _wait("the first unlearning round", sent, fed, thread, timeout=600)
        time.sleep(2.0)  # the device has the message (or is fetching it)
        assert nodes[0].kill() and not nodes[0].alive()
        # The device restarts: same partition, same store, a new node id.
        fed.start_supernode(0, 2, {"request-store": str(tmp_path / "dev0.sqlite")})
        done = lambda: _ledger_state(ledger_path, request_id) == DELIVERED  # noqa: E731
        _wait("the request to be unlearned and its receipt delivered", done, fed, thread, timeout=900)
        fed.superlink.kill()  # the SuperLink and the ServerApp it runs die at once
        thread.join(timeout=120)
        assert "error" in result  # that Flower run never completed
        crashed_rows = len(_rows(record_dir))
        fed.restart_superlink()  # same port, same --database; the SuperNodes reconnect
        outcome = submit_run(fed, {**run_config, "resume": 1}, timeout_s=900)
        assert run_status(fed, outcome.run_id) == "finished:completed"

    ledger = Ledger(ledger_path, run_config["run-id"])
    entry = ledger.get(0, request_id)
    # (1) The attempt the dead device could not finish is on record; the second one completed it.
    assert entry is not None and entry.state == DELIVERED and entry.attempts == 2
    assert any("attempt failed" in e["detail"] and "Node Unavailable" in e["detail"] for e in ledger.events())
    rows = _rows(record_dir)
    assert [r["round"] for r in rows if r.get("event") == "attempt-failed"] == [1]
    succeeded = [r for r in rows if "unlearn-round" in r and r.get("masks-accepted")]
    assert [r["round"] for r in succeeded] == [2]  # unlearned once, by the rejoined device
    # (2) The resumed run continued from resume.pt (round 1 + the unlearning) and redid nothing.
    resumed = rows[crashed_rows:]
    resume_row = resumed[0]
    assert resume_row["event"] == "run-resumed" and resume_row["applied"] == [f"0:{request_id}"]
    assert resume_row["round"] == 1 and resume_row["model-hash"] == entry.receipt["model-hash-after"]  # type: ignore[index]
    assert [r["round"] for r in resumed if r["phase"] == "train"] == [2]
    assert not any("unlearn-round" in r for r in resumed)
    check_record_from(record_dir, run_config)
    stored = RequestStore(tmp_path / "dev0.sqlite").get(request_id)
    assert stored.state == "completed" and stored.receipt is not None
    assert stored.receipt["model-hash-after"] == entry.receipt["model-hash-after"]  # type: ignore[index]
    assert stored.receipt["run-id"] == run_config["run-id"]


def check_record_from(record_dir: Path, run_config: dict[str, Any]) -> None:
    from fedforget.records import RunRecord

    check_record(RunRecord(record_dir), int(run_config["num-rounds"]))


def test_bad_requests_get_a_clear_answer_from_the_real_command(tmp_path: Path) -> None:
    run_config = _run_config(tmp_path)
    config = RunConfig.from_mapping(run_config)
    mine = ClientData.for_partition(config, 0).train_ids
    theirs = ClientData.for_partition(config, 1).train_ids
    store = RequestStore(tmp_path / "dev0.sqlite")
    store.add("samples", mine[:2], owned_ids=mine, request_id="wd-a")
    store.complete("wd-a", {"fr": 1.0})  # the server's receipt came: these samples are forgotten
    cases = [
        (["--ids", f"{mine[2]},{theirs[0]}"], "does not hold 1 of the ids"),
        (["--ids", str(mine[3]), "--request-id", "wd-a"], "duplicate request: 'wd-a' is already stored"),
        (["--ids", " , "], "empty request"),
        (["--ids", str(mine[1])], "already withdrawn and forgotten"),
    ]
    # The four commands run side by side (each only reads the store when it refuses).
    running = [
        subprocess.Popen(
            _withdraw_argv(tmp_path, run_config, 0, *args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args, _ in cases
    ]
    for (args, message), process in zip(cases, running, strict=True):
        out, err = process.communicate(timeout=300)
        assert process.returncode == 2, (args, out, err)
        assert message in err and err.startswith("error: "), (args, err)
    # None of them changed the device's store.
    stored = RequestStore(tmp_path / "dev0.sqlite")
    assert stored.get("wd-a").state == "completed"
    assert [r.request_id for r in stored.all()] == ["wd-a"]
    assert stored.tombstoned().tolist() == sorted([int(mine[0]), int(mine[1])])
