"""The server's ledger: its state machine, and exactly-once withdrawals across node deaths and restarts.

The state-machine tests use the ledger alone; the flow tests drive the real server loop against the
real ClientApp over ``tests/inprocess.py`` (no processes), where a test can kill a node at an exact
moment or crash the server between two writes, then resume with ``resume=1``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from flwr.app import Error, Message
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.supercore.task_identity import TaskIdentity

from fedforget.config import ConfigError
from fedforget.records import is_unlearning_round
from fedforget.request_store import RequestStore
from server.ledger import DELIVERED, RECEIVED, UNLEARNED, UNLEARNING, Ledger, LedgerError, ids_digest
from server.loop import run_federated_training
from server.setup import prepare_run
from tests.inprocess import InProcessGrid


@pytest.fixture(autouse=True)
def _identity() -> None:
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 0


# ---------------------------------------------------------------------------------------- state machine
def test_a_request_goes_through_every_state_once_and_survives_a_reopen(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite", "run-a")
    entry = ledger.receive(0, "wd-1", "samples", np.array([5, 3, 3, 9]), server_round=2)
    assert (entry.state, entry.num_ids, entry.attempts) == (RECEIVED, 3, 0)
    assert entry.ids_sha256 == ids_digest(np.array([9, 5, 3]))
    assert ledger.receive(0, "wd-1", "samples", np.array([3, 5, 9]), server_round=3) == entry  # idempotent
    ledger.begin_attempt([(0, "wd-1")], 2)
    ledger.fail_attempt([(0, "wd-1")], 2, "node 7 died")
    ledger.begin_attempt([(0, "wd-1")], 3)
    ledger.mark_unlearned([(0, "wd-1")], 3, "unlearned", {"fr": 1.0, "a-f": float("nan")})
    ledger.mark_delivered([(0, "wd-1")], 3)
    again = Ledger(tmp_path / "ledger.sqlite", "run-a")  # a restarted server
    final = again.get(0, "wd-1")
    assert final is not None
    assert (final.state, final.attempts, final.outcome, final.receipt) == (
        DELIVERED,
        2,
        "unlearned",
        {"fr": 1.0, "a-f": None},  # strict JSON: NaN is stored as null
    )
    moves = [(e["from"], e["to"]) for e in again.events(0, "wd-1")]
    assert moves == [
        (None, RECEIVED),
        (RECEIVED, UNLEARNING),
        (UNLEARNING, RECEIVED),
        (RECEIVED, UNLEARNING),
        (UNLEARNING, UNLEARNED),
        (UNLEARNED, DELIVERED),
    ]
    assert "node 7 died" in again.events(0, "wd-1")[2]["detail"]
    # Other runs sharing the file do not see this run's rows.
    assert Ledger(tmp_path / "ledger.sqlite", "run-b").entries() == []


@pytest.mark.parametrize(
    ("steps", "bad"),
    [
        ([], lambda lg: lg.mark_unlearned([(0, "r")], 1, "unlearned", {})),  # never attempted
        ([], lambda lg: lg.fail_attempt([(0, "r")], 1, "x")),
        (["begin"], lambda lg: lg.begin_attempt([(0, "r")], 1)),  # two attempts at once
        (["begin", "done"], lambda lg: lg.begin_attempt([(0, "r")], 1)),  # unlearned twice
        (["begin", "done"], lambda lg: lg.fail_attempt([(0, "r")], 1, "x")),
        (["begin", "done", "sent"], lambda lg: lg.mark_delivered([(0, "r")], 1)),
        ([], lambda lg: lg.begin_attempt([(1, "r")], 1)),  # unknown request
        ([], lambda lg: lg.receive(0, "r", "samples", np.array([1, 2, 4]), 1)),  # other ids
    ],
)
def test_forbidden_transitions_raise_and_change_nothing(tmp_path: Path, steps: list[str], bad) -> None:  # noqa: ANN001
    ledger = Ledger(tmp_path / "l.sqlite", "run")
    ledger.receive(0, "r", "samples", np.array([1, 2, 3]), 1)
    actions = {
        "begin": lambda: ledger.begin_attempt([(0, "r")], 1),
        "done": lambda: ledger.mark_unlearned([(0, "r")], 1, "unlearned", {}),
        "sent": lambda: ledger.mark_delivered([(0, "r")], 1),
    }
    for step in steps:
        actions[step]()
    before = (ledger.entries(), len(ledger.events()))
    with pytest.raises(LedgerError):
        bad(ledger)
    assert (ledger.entries(), len(ledger.events())) == before


def test_a_batch_transition_is_all_or_nothing(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite", "run")
    ledger.receive(0, "a", "samples", np.array([1]), 1)
    ledger.receive(1, "b", "samples", np.array([2]), 1)
    ledger.begin_attempt([(1, "b")], 1)
    with pytest.raises(LedgerError):
        ledger.begin_attempt([(0, "a"), (1, "b")], 1)
    assert ledger.get(0, "a").state == RECEIVED  # type: ignore[union-attr]


def test_reconcile_rolls_forward_rolls_back_and_refuses_a_lost_unlearning(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite", "run")
    for p, rid in [(0, "held"), (1, "lost-attempt"), (2, "done")]:
        ledger.receive(p, rid, "samples", np.array([p]), 1)
        ledger.begin_attempt([(p, rid)], 1)
    ledger.mark_unlearned([(2, "done")], 1, "unlearned", {"fr": 0.5})
    applied = {(0, "held"): {"outcome": "unlearned", "receipt": {"fr": 1.0}}, (2, "done"): {}}
    fixed = ledger.reconcile(applied, 2)
    assert fixed == {"rolled-forward": [(0, "held")], "rolled-back": [(1, "lost-attempt")]}
    held = ledger.get(0, "held")
    assert held is not None and (held.state, held.receipt) == (UNLEARNED, {"fr": 1.0})
    assert ledger.get(1, "lost-attempt").state == RECEIVED  # type: ignore[union-attr]
    assert ledger.get(2, "done").state == UNLEARNED  # type: ignore[union-attr]
    # A checkpoint that lacks an unlearning the ledger reports done must not be resumed from.
    with pytest.raises(LedgerError, match="does not hold that unlearning"):
        ledger.reconcile({}, 3)


def test_a_partition_is_bound_to_its_first_claimant_until_the_operator_rebinds_it(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite", "run")
    assert ledger.bound_node(0) is None
    assert ledger.claim(0, 100, 1) == 100 and ledger.claim(0, 100, 2) == 100  # the first claimant
    assert ledger.claim(0, 101, 2) == 100  # a second claimant is refused, and that is on record
    ledger.rebind(0, node=None, server_round=3, detail="device replaced")  # released: next claimant
    assert ledger.bound_node(0) is None and ledger.claim(0, 201, 3) == 201
    ledger.rebind(0, node=301, server_round=4)
    again = Ledger(tmp_path / "l.sqlite", "run")  # durable, per run
    assert again.bindings() == {0: 301} and Ledger(tmp_path / "l.sqlite", "other").bindings() == {}
    events = [(e["event"], e["node"], e["round"]) for e in again.binding_events(0)]
    assert events == [
        ("bound", 100, 1),
        ("refused", 101, 2),
        ("released", None, 3),
        ("bound", 201, 3),
        ("rebound", 301, 4),
    ]
    assert "bound to node 100" in again.binding_events(0)[1]["detail"]


def test_flowers_unsigned_64_bit_node_ids_are_bound(tmp_path: Path) -> None:
    """Flower's node ids go up to 2**64 - 1; SQLite's INTEGER stops at 2**63 - 1 (OverflowError before)."""
    ledger = Ledger(tmp_path / "l.sqlite", "run")
    big, other = 2**64 - 5, 2**63 + 7
    assert ledger.claim(0, big, 1) == big and ledger.claim(0, other, 2) == big
    ledger.rebind(1, node=other, server_round=2)
    assert Ledger(tmp_path / "l.sqlite", "run").bindings() == {0: big, 1: other}
    assert [e["node"] for e in ledger.binding_events()] == [big, other, other]


def test_the_operator_rebinds_a_partition_with_the_real_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fedforget.cli import main

    path = tmp_path / "ledger.sqlite"
    Ledger(path, "run").claim(1, 100, 1)
    argv = ["rebind", "--ledger", str(path), "--run-id", "run", "--partition", "1"]
    assert main([*argv, "--node", "4711"]) == 0
    assert "bound to node 4711 (was: 100)" in capsys.readouterr().out
    assert main(argv) == 0  # released: the next node to claim it is bound
    assert Ledger(path, "run").bound_node(1) is None
    assert (
        main(["rebind", "--ledger", str(tmp_path / "none.sqlite"), "--run-id", "run", "--partition", "1"])
        == 2
    )
    assert capsys.readouterr().err.startswith("error: no ledger at")


# ---------------------------------------------------------------------------------------- the flow
class Crash(Exception):  # noqa: N818 - a simulated server crash, not an error of the code under test
    """Raised inside the server to stop it dead at a chosen point."""


def _run_config(tmp: Path, **changes: object) -> dict:
    from simulations.run import resolve_run_config

    values = {
        "num-clients": 2,
        "num-rounds": 3,
        "local-epochs": 1,
        "max-train-samples": 600,
        "num-shadows": 2,
        "shadow-epochs": 2,
        "unlearn-rounds": 1,
        "forsaken-steps": 3,
        "withdrawals": "2:0:samples:0.1",
        "run-dir": str(tmp / "runs"),
        **changes,
    }
    return resolve_run_config(values, None)


def _unlearn_rows(rows: list[dict]) -> list[dict]:
    return [r for r in rows if is_unlearning_round(r)]


def _device(tmp: Path, partition: int = 0) -> RequestStore:
    return RequestStore(tmp / f"dev{partition}.sqlite")


def test_a_node_dying_mid_unlearning_keeps_the_request_open_until_it_rejoins(tmp_path: Path) -> None:
    """The device restarts under a new node id; partition 0 is bound to its old one, so the operator
    re-binds it (``fedforget rebind``, here the ledger call it makes) and the new node carries on."""
    grid: InProcessGrid

    def die_once(reply: Message) -> Message:
        node = reply.metadata.src_node_id
        if reply.metadata.message_type == "train.unlearn" and node == 100:
            # The device dies before its mask reaches the server, then restarts with a new node id.
            grid.dead.add(node)
            new_node = grid.rejoin(node)
            run.ledger.rebind(0, node=new_node, server_round=2, detail="device restarted")
            error = Message(Error(code=5, reason="Error: Node Unavailable"), reply_to=grid.sent[-1])
            error.metadata.__dict__["_src_node_id"] = SUPERLINK_NODE_ID  # as the SuperLink sends it
            return error
        return reply

    run_config = _run_config(tmp_path)
    run = prepare_run(run_config)
    grid = InProcessGrid(run_config, tmp_path, die_once)
    run_federated_training(grid, run)
    assert [e["event"] for e in run.ledger.binding_events(0)] == ["bound", "rebound"]
    assert run.ledger.bindings() == {0: grid.node_of(0), 1: 101}
    (entry,) = run.ledger.entries()
    assert (entry.partition, entry.state, entry.attempts) == (0, DELIVERED, 2)
    details = [e["detail"] for e in run.ledger.events(0, entry.request_id)]
    assert any("attempt failed" in d and "Node Unavailable" in d for d in details)
    rows = run.record.metrics()
    failed_at = next(r["round"] for r in rows if r.get("event") == "attempt-failed")
    done = [r for r in _unlearn_rows(rows) if r["masks-accepted"] == 1]
    assert failed_at == 2 and [r["round"] for r in done] == [3]  # completed once, by the rejoined node
    stored = _device(tmp_path).get(entry.request_id)
    assert stored.state == "completed" and stored.receipt is not None
    assert stored.receipt["model-hash-after"] == entry.receipt["model-hash-after"]  # type: ignore[index]
    assert stored.receipt["run-id"] == run.config.run_id
    # The failed attempt left nothing in the model: round 2 trained on the model from before it.
    unlearn_sent = [r for r in rows if r.get("event") == "unlearn-round-sent"]
    assert [r["round"] for r in unlearn_sent] == [2, 3]


@pytest.mark.parametrize(
    ("crash_at", "attempts", "moved"),
    [
        ("during-unlearning", 2, "rolled-back"),  # the attempt dies: redone once, from the old model
        ("before-ledger-write", 1, "rolled-forward"),  # checkpoint holds it: never redone
        ("before-receipt", 1, None),  # the device stored the receipt, its answer was lost: nothing redone
    ],
)
def test_a_server_crash_resumes_without_redoing_or_dropping_a_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crash_at: str, attempts: int, moved: str | None
) -> None:
    def crash(reply: Message) -> Message:
        kind = reply.metadata.message_type
        if (crash_at, kind) in {("during-unlearning", "train.unlearn"), ("before-receipt", "query.receipt")}:
            raise Crash(kind)
        return reply

    if crash_at == "before-ledger-write":
        original = Ledger.mark_unlearned

        def crash_once(self: Ledger, *args: object, **kwargs: object) -> None:
            monkeypatch.setattr(Ledger, "mark_unlearned", original)
            raise Crash("after the resume point, before the ledger")

        monkeypatch.setattr(Ledger, "mark_unlearned", crash_once)

    run_config = _run_config(tmp_path, **{"num-rounds": 2})
    first = prepare_run(run_config)
    with pytest.raises(Crash):
        run_federated_training(InProcessGrid(run_config, tmp_path, crash), first)
    (entry,) = first.ledger.entries()
    assert entry.state == (UNLEARNED if crash_at == "before-receipt" else UNLEARNING)
    # (With the crash on the receipt's reply, the device has stored it; the server never heard so.)
    assert _device(tmp_path).get(entry.request_id).state == (
        "completed" if crash_at == "before-receipt" else "pending"
    )
    crashed_rows = len(first.record.metrics())

    # The SuperLink / ServerApp restarts: the same run id, resume=1, the same devices.
    resumed = prepare_run({**run_config, "resume": 1})
    run_federated_training(InProcessGrid(run_config, tmp_path), resumed)
    rows = resumed.record.metrics()
    new_rows = rows[crashed_rows:]
    resume_row = new_rows[0]
    assert resume_row["event"] == "run-resumed"
    expected_round = 1  # resume.pt holds round 1 (+ the unlearning when it was written)
    assert resume_row["round"] == expected_round
    assert [r["round"] for r in new_rows if r["phase"] == "train"] == [2]
    if moved:
        assert resume_row[moved] == [f"0:{entry.request_id}"]
    final = resumed.ledger.get(0, entry.request_id)
    assert final is not None and (final.state, final.attempts) == (DELIVERED, attempts)
    redone = [r for r in _unlearn_rows(new_rows) if r["masks-accepted"]]
    assert len(redone) == (1 if crash_at == "during-unlearning" else 0)
    stored = _device(tmp_path).get(entry.request_id)
    assert stored.state == "completed"
    assert stored.receipt["model-hash-after"] == final.receipt["model-hash-after"]  # type: ignore[index]
    # The resumed run started from the checkpointed model: with the unlearning when it was
    # checkpointed, else from the model the redone attempt started from.
    held = "model-hash-before" if crash_at == "during-unlearning" else "model-hash-after"
    assert resume_row["model-hash"] == final.receipt[held]  # type: ignore[index]
    summary = resumed.record.read_json("withdrawals.json")["requests"]
    assert [r["request-id"] for r in summary] == [entry.request_id] and summary[0]["receipt"] is not None


def test_resume_refuses_a_missing_record_a_changed_config_and_a_reused_run_id(tmp_path: Path) -> None:
    run_config = _run_config(tmp_path)
    with pytest.raises(ConfigError, match="no run record"):
        prepare_run({**run_config, "resume": 1})
    with pytest.raises(ConfigError, match="resume=1 together with the run-id"):
        prepare_run({**run_config, "resume": 1, "run-id": ""})
    run = prepare_run(run_config)
    run.ledger.receive(0, "x", "samples", np.array([1]), 1)
    with pytest.raises(ConfigError, match="learning-rate"):
        prepare_run({**run_config, "resume": 1, "learning-rate": 0.5})
    with pytest.raises(ConfigError, match="already holds requests"):
        prepare_run(run_config)
