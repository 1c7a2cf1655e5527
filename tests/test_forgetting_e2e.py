"""The forgetting-rate evaluator in a real Flower simulation, with every client reply audited."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest

from fedforget import data
from fedforget.client_data import ClientData
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


def test_withdrawal_gets_fr_every_round_and_forget_features_never_reach_the_server(tmp_path: Path) -> None:
    schedule = "2:0:samples:0.1"
    run_config = resolve_run_config(
        {
            "num-clients": 3,
            "num-rounds": 3,
            "withdrawals": schedule,
            "log-messages": 1,
            "num-shadows": 2,
            "run-dir": str(tmp_path),
        },
        None,
    )
    stream = io.StringIO()
    record = simulate(run_config, stream=stream)
    config = record.config()

    # The forget set the client owns, computed independently of the server.
    client = ClientData.for_partition(config, 0)
    request = parse_schedule(schedule)[0]
    forget_ids = resolve_ids(request, client.train_ids, client.y_train, config.seed)
    assert len(forget_ids) == round(0.1 * len(client.train_ids))

    withdrawals = record.read_json("withdrawals.json")["requests"]
    assert len(withdrawals) == 1
    assert withdrawals[0]["client"] == 0 and withdrawals[0]["global-ids"] == forget_ids.tolist()
    assert withdrawals[0]["rounds"] == [2, 3]

    rows = record.metrics()
    assert any(r["phase"] == "oracle" and r["event"] == "oracle-trained" for r in rows)
    before = next(r for r in rows if r["phase"] == "withdrawal")
    assert before["b-t"] + before["b-f"] == len(forget_ids)
    measured = [r for r in rows if r["phase"] == "train" and "a-f" in r]
    assert [r["round"] for r in measured] == [2, 3]
    for row in measured:
        assert row["b-t"] == before["b-t"] and row["num-forget"] == len(forget_ids)
        if before["b-t"]:
            assert row["fr"] == pytest.approx((row["a-f"] - row["b-f"]) / row["b-t"])
        else:
            assert row["fr"] is None  # undefined: stored as null
        assert 0.0 <= row["attack-auc"] <= 1.0 and 0.0 <= row["forget-accuracy"] <= 1.0
    assert "FR" in stream.getvalue() and "withdrawal r2-c0-samples-0.1" in stream.getvalue()

    # Audit: every reply any client sent the server. Decisions came back, features did not.
    logs = sorted((record.path / "messages").glob("*.npz"))
    membership = [p for p in logs if "query-membership" in p.name]
    assert len(membership) == 3  # before unlearning + rounds 2 and 3
    decided = np.load(membership[-1])["decisions__ids"]
    assert sorted(decided.tolist()) == forget_ids.tolist()
    x_forget = data.load(config).x_train[forget_ids]
    for path in logs:
        with np.load(path) as arrays:
            for key in arrays.files:
                if arrays[key].dtype.kind == "f":
                    for sample in x_forget:
                        assert not _contains_row(arrays[key], sample), f"forget features in {path.name}:{key}"
    assert math.isfinite(measured[-1]["test-accuracy"])


def test_the_leak_detector_finds_a_leaked_sample() -> None:
    sample = data.load_dataset("digits").x_train[5]
    assert _contains_row(np.concatenate([np.zeros(7), sample, np.ones(3)]), sample)
    assert not _contains_row(np.concatenate([np.zeros(7), sample[:-1], np.ones(3)]), sample)
