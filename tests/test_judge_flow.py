"""The server's judge in a federated run (issue 13): calibrated on the federated model every round,
never sent in an unlearning message, never what a method steers or stops by.

The data is ``memorise`` (fedforget/data/synthetic.py: a weak class signal and label noise, so the
federated MLP can only memorise it; available without ../shared), over the in-process grid.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Message
from flwr.supercore.task_identity import TaskIdentity

from fedforget.judge import judge_aux_half
from fedforget.records import is_unlearning_round
from protocol import messages as wire
from server.loop import run_federated_training
from server.setup import prepare_run
from tests.inprocess import InProcessGrid

NUM_ROUNDS = 4


@pytest.fixture(autouse=True)
def _identity() -> None:
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 0


def _run_config(tmp: Path, **changes: object) -> dict:
    from simulations.run import resolve_run_config

    values = {
        "dataset": "memorise",
        "num-clients": 3,
        "num-rounds": NUM_ROUNDS,
        "local-epochs": 4,
        "num-shadows": 2,  # the loss and shokri attacks (lira needs >= 3 shadows)
        "unlearn-rounds": 1,
        "forsaken-steps": 5,
        "withdrawals": "3:0:samples:0.1",
        "run-dir": str(tmp / "runs"),
        **changes,
    }
    return resolve_run_config(values, None)


def _run(tmp: Path, tamper: Any = None, **changes: object) -> tuple[Any, InProcessGrid]:
    run_config = _run_config(tmp, **changes)
    run = prepare_run(run_config)
    grid = InProcessGrid(run_config, tmp, tamper)
    run_federated_training(grid, run)
    return run, grid


@pytest.fixture(scope="module")
def memorised(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, InProcessGrid]:
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 0
    return _run(tmp_path_factory.mktemp("judge"))


def test_the_judge_sees_what_the_federated_model_memorised(memorised: tuple[Any, InProcessGrid]) -> None:
    """Before unlearning the judge, calibrated on the federated model itself, has power and calls at
    least half of the forget set members (the shadow oracle trained centrally called a handful)."""
    run, _ = memorised
    rows = run.record.metrics()
    (received,) = [r for r in rows if r.get("event") == "request-received"]
    assert received["judge"] == "loss" and received["judge-measurable"] is True
    assert received["judge-auc"] >= 0.65
    assert received["b-t"] >= received["num-forget"] / 2, received
    assert received["b-t"] + received["b-f"] == received["num-forget"]
    (trained,) = [r for r in rows if r.get("event") == "judge-trained"]
    assert trained["attacks"] == ["loss", "shokri"] and trained["skipped"]


def test_a_judge_power_row_exists_every_round(memorised: tuple[Any, InProcessGrid]) -> None:
    run, _ = memorised
    rows = run.record.metrics()
    power = [r for r in rows if r.get("event") == "judge-power" and r.get("model") == "global"]
    assert {r["round"] for r in power} == set(range(1, NUM_ROUNDS + 1))
    for row in power:
        loss = row["loss"]
        assert 0.0 <= loss["auc"] <= 1.0 and loss["auc-lower-95"] <= loss["auc"]
        assert {"tpr-at-1pct-fpr", "tpr-at-0.1pct-fpr", "balanced-accuracy", "threshold"} <= set(loss)
        assert row["measurable"] == loss["measurable"]
    # after the first withdrawal every attack of the judge is calibrated too
    assert all("shokri" in r for r in power if r["round"] >= 3)
    # every measured row names its judge, and the FR per attack sits beside the headline
    measured = [r for r in rows if is_unlearning_round(r) or (r.get("phase") == "train" and "fr-status" in r)]
    assert measured and all(r["judge"] == "loss" and "fr-shokri" in r and "fr-status" in r for r in measured)


def test_no_unlearning_message_carries_judge_or_oracle_state(memorised: tuple[Any, InProcessGrid]) -> None:
    _, grid = memorised
    unlearn = [m for m in grid.sent if m.metadata.message_type == wire.UNLEARN]
    judge = [m for m in grid.sent if m.metadata.message_type == wire.QUERY_JUDGE]
    assert unlearn and judge
    run, _ = memorised
    judge_half, steer_half = judge_aux_half(run.split.aux_ids, run.config.seed)
    rows = {row.tobytes(): i for i, row in enumerate(run.dataset.x_train.astype(np.float32))}
    for message in unlearn:
        assert set(message.content.keys()) == {wire.ARRAYS, wire.CONFIG, wire.STEER_REFERENCE}
        assert not [k for k in message.content[wire.CONFIG] if "judge" in k or "oracle" in k]
        # the never-seen samples lent to steer by: auxiliary samples, none of the judge's half
        record = message.content[wire.STEER_REFERENCE]
        lent_x = record["x"].numpy()
        assert len(lent_x) == min(run.config.steer_reference_samples, len(steer_half)) > 0
        lent_ids = {rows[x.tobytes()] for x in lent_x}
        assert lent_ids <= set(steer_half.tolist()) and not lent_ids & set(judge_half.tolist())
        assert (record["y"].numpy() == run.dataset.y_train[sorted(lent_ids)]).all()
    assert all(wire.JUDGE in m.content and wire.JUDGE_CONFIG in m.content for m in judge)


def test_without_lent_samples_no_unlearning_message_carries_samples(tmp_path: Path) -> None:
    """``steer-reference-samples = 0``: the device steers by its own held-out samples only."""
    _, grid = _run(tmp_path, **{"steer-reference-samples": 0})
    unlearn = [m for m in grid.sent if m.metadata.message_type == wire.UNLEARN]
    assert unlearn and all(set(m.content.keys()) == {wire.ARRAYS, wire.CONFIG} for m in unlearn)


def test_a_device_claiming_success_is_reported_by_the_judge_not_by_itself(tmp_path: Path) -> None:
    """The device's steer says FR 1.0 and target met, but its mask changes nothing: the judge reports
    what happened (FR 0, measured), and the attempt's receipt carries both, each named."""

    def claims_success(reply: Message) -> Message:
        if reply.metadata.message_type == wire.UNLEARN and not reply.has_error():
            mask = reply.content[wire.MASK]
            reply.content[wire.MASK] = ArrayRecord({k: Array(mask[k].numpy() * 0.0) for k in mask})
            reply.content[wire.METRICS]["steer-fr"] = 1.0
            reply.content[wire.METRICS]["steer-target-met"] = 1.0
        return reply

    run, _ = _run(tmp_path, claims_success)
    rows = run.record.metrics()
    (unlearned,) = [r for r in rows if is_unlearning_round(r)]
    assert unlearned["steer-fr"] == 1.0 and unlearned["steer-target-met"] is True
    assert unlearned["fr-status"] == "measured" and unlearned["fr"] == 0.0
    assert unlearned["a-f"] == unlearned["b-f"]
    # nothing moved, and the AUC column says so too (the model before and after are the same model)
    assert unlearned["attack-auc"] == pytest.approx(unlearned["attack-auc-before"])
    (entry,) = [e for e in run.ledger.entries() if e.receipt is not None]
    receipt = entry.receipt
    assert receipt["judge"] == "loss" and receipt["fr"] == 0.0 and receipt["steer-fr"] == 1.0
    assert receipt["target-met"] is False and entry.outcome == "unlearned-below-target"


def test_the_retrain_reference_is_saved_and_judged_by_every_attack(tmp_path: Path) -> None:
    """retrain-reference=1: the retrained model is in the run record for audits, and the receipt
    carries the verdict against it under each attack (over-forgetting counts as a failure too)."""
    import torch

    run, _ = _run(tmp_path, **{"retrain-reference": 1})
    rows = run.record.metrics()
    (reference,) = [r for r in rows if r.get("event") == "retrain-reference"]
    saved = run.record.path / "checkpoints" / "retrain-reference.pt"
    assert saved.exists() and reference["retrain-checkpoint"] == "checkpoints/retrain-reference-3.pt"
    state = torch.load(saved, weights_only=True)
    assert set(state) == set(run.model.state_dict())
    verdicts = {
        k[len("verdict-") :]: v
        for k, v in reference.items()
        if k.startswith("verdict-") and "reason" not in k
    }
    assert set(verdicts) == {"loss", "shokri"}
    allowed = {"retrain-equivalent", "under-forgetting", "over-forgetting", "not-measurable"}
    assert set(verdicts.values()) <= allowed and reference["verdict"] == verdicts["loss"]
    (entry,) = [e for e in run.ledger.entries() if e.receipt is not None]
    assert entry.receipt["verdict-loss"] == verdicts["loss"]
    assert entry.receipt.get("fr-retrain") == reference["fr-retrain"]
    power = [r for r in rows if r.get("event") == "judge-power" and r.get("model") == "retrain-reference"]
    assert len(power) == 1 and power[0]["round"] == 3
