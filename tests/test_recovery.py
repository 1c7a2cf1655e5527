"""Faults with real processes: the ServerApp killed at each commit point, a SuperNode killed during
its unlearning round, the SuperLink killed; bad requests.

Each test starts a SuperLink and two SuperNodes on 127.0.0.1 (insecure; TLS is tested elsewhere),
each device with its own durable request store. Processes are killed with SIGKILL (no clean-up
runs): the ServerApp by itself, at the exact commit point, through the crash hook
``fedforget/crashpoints.py`` (``FEDFORGET_CRASH_AT``, set only here); SuperNodes and the SuperLink by
PID, with every process below them. The finer state-machine cases run in-process in
tests/test_ledger.py.
"""

from __future__ import annotations

import contextlib
import json
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
from fedforget.crashpoints import CRASH_AT, CRASH_FUSE, POINTS
from fedforget.records import RunRecord
from fedforget.request_store import RequestStore
from fedforget.verify import verify_record
from fedforget.withdrawals import parse_schedule
from server.ledger import DELIVERED, UNLEARNED, Ledger
from simulations import launcher
from simulations.launcher import Federation, FlowerRunError, descendants, federation, run_status, submit_run
from simulations.run import check_record, resolve_run_config
from tests.ports import ports_from

pytestmark = pytest.mark.slow

FEDFORGET = str(Path(sys.executable).parent / "fedforget")


@pytest.fixture(autouse=True)
def _own_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(launcher, "free_port", ports_from(39250, 39299))


def _run_config(tmp: Path, **changes: Any) -> dict[str, Any]:
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
            **changes,
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
            result["outcome"] = submit_run(fed, run_config, timeout_s=900)
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


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _crashed(fuse: Path, point: str) -> Callable[[], bool]:
    """Whether the process that reached ``point`` wrote its PID into the fuse and is dead."""

    def ready() -> bool:
        text = (fuse / point).read_text() if (fuse / point).exists() else ""
        return bool(text.strip()) and not _alive(int(text.split()[0]))

    return ready


def _running(program: bytes, below: int) -> set[int]:
    """PIDs of the living processes below ``below`` whose command line names ``program``."""
    found = set()
    for pid in descendants(below):
        with contextlib.suppress(OSError):
            if program in Path(f"/proc/{pid}/cmdline").read_bytes() and _alive(pid):
                found.add(pid)
    return found


def test_the_serverapp_killed_at_each_commit_point_loses_no_request_and_unlearns_none_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One model lineage, four Flower runs, each crash at the exact point (``fedforget/crashpoints.py``):

    1. request A (device 0, round 2) has its masks aggregated: the ServerApp dies (``masks-aggregated``);
    2. ``resume=1``: A is rolled back and unlearned again from the round-1 model; the ServerApp dies
       once ``resume.pt`` holds it, before the ledger says so (``resume-written``);
    3. ``resume=1``: A is rolled forward (not redone), its receipt delivered; round 2 trains; request
       B (device 1, round 3) is unlearned and committed in the ledger; the ServerApp dies before the
       receipt is sent (``ledger-committed``), and the SuperLink is killed too and restarted on its
       database (the whole server went down);
    4. ``resume=1``: B's receipt is re-sent, round 3 trains, the run completes.
    """
    fuse = tmp_path / "fuse"
    fuse.mkdir()
    monkeypatch.setenv(CRASH_AT, ",".join(POINTS))  # inherited by the SuperLink and its ServerApps
    monkeypatch.setenv(CRASH_FUSE, str(fuse))  # each point fires once
    schedule = "2:0:samples:0.02; 3:1:samples:0.02"
    run_config = _run_config(tmp_path, **{"num-rounds": 3, "withdrawals": schedule})
    a, b = (request.request_id for request in parse_schedule(schedule))
    record_dir = Path(run_config["run-dir"]) / run_config["run-id"]
    resumed = {**run_config, "resume": 1}
    with federation(simulation=False, database=tmp_path / "superlink.db") as fed:
        _start_nodes(fed, tmp_path)
        superlink = fed.superlink.pid
        for config, point in ((run_config, POINTS[0]), (resumed, POINTS[1]), (resumed, POINTS[2])):
            thread, result = _in_background(fed, config)
            _wait(f"the ServerApp to die at {point}", _crashed(fuse, point), fed, thread, timeout=900)
            pid, program = (fuse / point).read_text().split()
            assert program == "flwr-serverapp" and fed.superlink.alive()  # the ServerApp died, alone
            assert "outcome" not in result  # that Flower run never completed
        fed.superlink.kill()  # ... and then the whole server: the SuperLink and all below it
        fed.restart_superlink()  # same port, same --database; the SuperNodes reconnect
        outcome = submit_run(fed, resumed, timeout_s=900)
        assert run_status(fed, outcome.run_id) == "finished:completed"
        assert _running(b"flwr-serverapp", fed.superlink.pid) == set()
    assert superlink != fed.superlink.pid

    ledger = Ledger(run_config["ledger"], run_config["run-id"])
    entries = {e.request_id: e for e in ledger.entries()}
    assert set(entries) == {a, b} and all(e.state == DELIVERED for e in entries.values())  # none lost
    assert entries[a].attempts == 2 and entries[b].attempts == 1
    for rid in (a, b):  # each reached `unlearned` exactly once
        assert [e["to"] for e in ledger.events(request_id=rid)].count(UNLEARNED) == 1
    events_a = ledger.events(request_id=a)
    assert any("interrupted by a server restart" in e["detail"] for e in events_a)
    assert any(e["to"] == UNLEARNED and e["detail"].startswith("recovered") for e in events_a)

    rows = _rows(record_dir)
    resumes = [r for r in rows if r.get("event") == "run-resumed"]
    assert [(r["round"], r["rolled-back"], r["rolled-forward"]) for r in resumes] == [
        (1, [f"0:{a}"], []),
        (1, [], [f"0:{a}"]),
        (2, [], []),
    ]
    assert resumes[2]["applied"] == sorted([f"0:{a}", f"1:{b}"])
    receipt_a, receipt_b = entries[a].receipt, entries[b].receipt
    assert receipt_a is not None and receipt_b is not None
    # A's second attempt started from the round-1 model, which never held the first attempt's masks;
    # the resumed runs continued from the models the receipts name: nothing applied twice.
    assert receipt_a["model-hash-before"] == resumes[0]["model-hash"]
    assert resumes[1]["model-hash"] == receipt_a["model-hash-after"]
    assert resumes[2]["model-hash"] == receipt_b["model-hash-after"]
    masked = [r for r in rows if r.get("phase") == "unlearn" and r.get("masks-accepted")]
    assert [(r["round"], r["request-ids"]) for r in masked] == [(2, [a]), (2, [a]), (3, [b])]
    assert [r["round"] for r in rows if r.get("phase") == "train"] == [1, 2, 3]
    check_record(RunRecord(record_dir), 3)
    _, _, applied = RunRecord(record_dir).load_resume_point()
    assert {k: v["receipt"] for k, v in applied.items()} == {(0, a): receipt_a, (1, b): receipt_b}
    assert verify_record(record_dir) == (4, [])
    for partition, rid, receipt in ((0, a, receipt_a), (1, b, receipt_b)):
        stored = RequestStore(tmp_path / f"dev{partition}.sqlite").get(rid)
        assert stored.state == "completed" and stored.receipt == {**receipt, "request-id": rid}


def test_a_device_killed_during_its_unlearning_round_gets_its_request_done_after_it_rejoins(
    tmp_path: Path,
) -> None:
    """The device holding a withdrawal is killed (``kill -9``, with its ClientApp process) while it
    computes its unlearning mask, and restarts (new node id, same store): the attempt fails, the
    request stays open, and the next round completes it with the rejoined device. Partition 0 is
    bound to the dead node id (``server/ledger.py``), so the operator re-binds it with the real
    ``fedforget rebind`` before the device comes back."""
    run_config = _run_config(tmp_path, **{"num-rounds": 3, "withdrawals": "2:0:samples:0.02"})
    (request,) = parse_schedule(run_config["withdrawals"])
    request_id = request.request_id
    record_dir = Path(run_config["run-dir"]) / run_config["run-id"]
    with federation(simulation=False) as fed:
        nodes = _start_nodes(fed, tmp_path)
        thread, result = _in_background(fed, run_config)
        sent = lambda: any(r.get("event") == "unlearn-round-sent" for r in _rows(record_dir))  # noqa: E731

        def computing() -> bool:  # a ClientApp process of device 0 runs, after the mask was asked for
            return sent() and bool(_running(b"flwr-clientapp", nodes[0].pid))

        _wait("device 0 to compute its unlearning mask", computing, fed, thread, timeout=600)
        assert nodes[0].kill() and not nodes[0].alive()
        rebind = [FEDFORGET, "rebind", "--ledger", run_config["ledger"], "--run-id", run_config["run-id"]]
        released = subprocess.run([*rebind, "--partition", "0"], capture_output=True, text=True, timeout=120)
        assert released.returncode == 0 and "the next node that claims it" in released.stdout, released.stderr
        # The device restarts: same partition, same store, a new node id.
        fed.start_supernode(0, 2, {"request-store": str(tmp_path / "dev0.sqlite")})
        thread.join(timeout=900)
        assert "outcome" in result, result.get("error")

    ledger = Ledger(run_config["ledger"], run_config["run-id"])
    entry = ledger.get(0, request_id)
    # The attempt the dead device could not finish is on record; the second one completed it.
    assert entry is not None and entry.state == DELIVERED and entry.attempts == 2
    assert any("attempt failed" in e["detail"] and "Node Unavailable" in e["detail"] for e in ledger.events())
    rows = _rows(record_dir)
    assert [r["round"] for r in rows if r.get("event") == "attempt-failed"] == [2]
    succeeded = [r for r in rows if "unlearn-round" in r and r.get("masks-accepted")]
    assert [r["round"] for r in succeeded] == [3]  # unlearned once, by the rejoined device
    assert [e["event"] for e in ledger.binding_events(0)] == ["bound", "released", "bound"]
    assert not any(r.get("event") == "claim-refused" for r in rows)
    check_record(RunRecord(record_dir), 3)
    stored = RequestStore(tmp_path / "dev0.sqlite").get(request_id)
    assert stored.state == "completed" and stored.receipt is not None
    assert stored.receipt["model-hash-after"] == entry.receipt["model-hash-after"]  # type: ignore[index]
    assert stored.receipt["run-id"] == run_config["run-id"]


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
