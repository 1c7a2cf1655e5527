"""The forgetting-rate evaluator in a real Flower simulation, with every client reply audited."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest

from fedforget import data
from fedforget.client_data import ClientData
from fedforget.records import is_unlearning_round
from fedforget.withdrawals import parse_schedule, resolve_ids
from simulations.run import resolve_run_config, simulate

pytestmark = pytest.mark.slow


def _contains_row(haystack: np.ndarray, needle: np.ndarray) -> bool:
    """Whether ``needle`` occurs as a contiguous run of ``haystack`` (both flattened, exact values)."""
    flat = np.asarray(haystack, dtype=np.float64).ravel()
    probe = np.asarray(needle, dtype=np.float64).ravel()
    if flat.size < probe.size:
        return False
    starts = np.flatnonzero(flat[: flat.size - probe.size + 1] == probe[0])
    return any(np.array_equal(flat[s : s + probe.size], probe) for s in starts)


def test_withdrawals_of_every_grain_are_unlearned_and_audited(tmp_path: Path) -> None:
    # Two clients withdraw in the same round (a sample share and a class), a third leaves entirely later.
    schedule = "2:0:samples:0.1; 2:1:class:3; 3:2:client"
    run_config = resolve_run_config(
        {
            "num-clients": 3,
            "num-rounds": 3,
            "withdrawals": schedule,
            "log-messages": 1,
            "num-shadows": 2,
            "unlearn-rounds": 1,
            "forsaken-steps": 8,
            "run-dir": str(tmp_path),
        },
        None,
    )
    stream = io.StringIO()
    record = simulate(run_config, stream=stream)
    config = record.config()

    # Each forget set, computed independently of the server from the client's own data.
    expected: dict[str, np.ndarray] = {}
    for request in parse_schedule(schedule):
        client = ClientData.for_partition(config, request.client)
        expected[request.request_id] = resolve_ids(request, client.train_ids, client.y_train, config.seed)
    part1 = ClientData.for_partition(config, 1)
    assert expected["r2-c1-class-3"].tolist() == part1.train_ids[part1.y_train == 3].tolist()
    assert expected["r3-c2-client"].tolist() == ClientData.for_partition(config, 2).train_ids.tolist()

    withdrawals = {w["request-id"]: w for w in record.read_json("withdrawals.json")["requests"]}
    assert set(withdrawals) == set(expected)
    for rid, ids in expected.items():
        assert withdrawals[rid]["global-ids"] == ids.tolist()
        assert withdrawals[rid]["outcome"].startswith("unlearned")
        receipt = withdrawals[rid]["receipt"]
        assert receipt["model-hash-before"] != receipt["model-hash-after"]
    assert withdrawals["r2-c0-samples-0.1"]["rounds"] == [2, 3]

    rows = record.metrics()
    assert any(r["phase"] == "judge" and r["event"] == "judge-trained" for r in rows)
    power = {r["round"] for r in rows if r.get("event") == "judge-power" and r["model"] == "global"}
    assert power == {1, 2, 3}  # the judge is calibrated on the global model every round
    received = [r for r in rows if r["phase"] == "withdrawal"]
    assert [sorted(r["request-ids"]) for r in received] == [
        ["r2-c0-samples-0.1", "r2-c1-class-3"],
        ["r3-c2-client"],
    ]
    first = received[0]
    n_first = len(expected["r2-c0-samples-0.1"]) + len(expected["r2-c1-class-3"])
    assert first["b-t"] + first["b-f"] == first["num-forget"] == n_first
    unlearn_rows = [r for r in rows if is_unlearning_round(r)]
    assert [r["round"] for r in unlearn_rows] == [2, 3]
    assert unlearn_rows[0]["masks-accepted"] == 2 and unlearn_rows[0]["masks-rejected"] == 0
    assert unlearn_rows[0]["bytes-up"] > 0 and unlearn_rows[0]["mask-nonzero"] > 0
    for row in unlearn_rows:
        assert row["b-t"] + row["b-f"] == row["num-forget"] and row["judge"] == "loss"
        if row["fr-status"] == "measured":
            assert row["fr"] == pytest.approx((row["a-f"] - row["b-f"]) / row["b-t"])
        else:  # the judge could not see: no number pretends it did
            assert row["fr"] is None and row["fr-reason"]
        assert 0.0 <= row["attack-auc"] <= 1.0
    train_rows = [r for r in rows if r["phase"] == "train"]
    assert all("fr-status" in r for r in train_rows if r["round"] >= 2)
    assert train_rows[-1]["clients"] == 3  # the departed client still answers, with no data
    # (The console stream is best effort: `flwr log` may drop lines under load; the record is the truth.)
    assert "[fedforget] run record:" in stream.getvalue()
    assert {"before-unlearning", "after-unlearning"} <= set(record.named_checkpoints())

    # Each device holds its completed request and receipt in its durable store.
    from fedforget.request_store import RequestStore

    for request in parse_schedule(schedule):
        store = RequestStore(record.path / "clients" / f"client-{request.client}.sqlite")
        stored = store.get(request.request_id)
        assert stored.state == "completed" and stored.receipt["request-id"] == request.request_id
        assert set(store.tombstoned().tolist()) >= set(expected[request.request_id].tolist())

    # Audit: every reply any client sent the server. Score bins and masks came back, features did not.
    logs = sorted((record.path / "messages").glob("*.npz"))
    assert any("train-unlearn" in p.name for p in logs)
    judged = [p for p in logs if "query-judge" in p.name]
    decided = set()
    for path in judged:
        with np.load(path) as arrays:
            if "forget__ids" in arrays.files:
                decided |= set(arrays["forget__ids"].tolist())
    assert decided == set(np.concatenate(list(expected.values())).tolist())
    x_all = data.load(config).x_train
    forget_x = x_all[np.concatenate([expected["r2-c0-samples-0.1"], expected["r2-c1-class-3"]])]
    for path in logs:
        with np.load(path) as arrays:
            for key in arrays.files:
                if arrays[key].dtype.kind == "f":
                    for sample in forget_x:
                        assert not _contains_row(arrays[key], sample), f"forget features in {path.name}:{key}"
    assert math.isfinite(train_rows[-1]["test-accuracy"])


def test_the_leak_detector_finds_a_leaked_sample() -> None:
    sample = data.load_dataset("digits").x_train[5]
    assert _contains_row(np.concatenate([np.zeros(7), sample, np.ones(3)]), sample)
    assert not _contains_row(np.concatenate([np.zeros(7), sample[:-1], np.ones(3)]), sample)
