"""The baselines through the server's real withdrawal flow (``unlearn-method = ...``), in-process.

``InProcessGrid`` (tests/inprocess.py) drives the real ServerApp loop and the real ClientApp handlers;
every method must produce the same records as Forsaken: ``phase = "unlearn"`` rows with the method's
name, FR and accuracies, the receipt on the device and in the ledger, ledger state
``receipt-delivered``, and never train on a withdrawn sample.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.supercore.task_identity import TaskIdentity

from fedforget import training
from fedforget.records import is_unlearning_round
from fedforget.request_store import RequestStore
from server.ledger import DELIVERED
from server.loop import run_federated_training
from server.setup import prepare_run
from server.unlearning import model_hash
from tests.inprocess import InProcessGrid


@pytest.fixture(autouse=True)
def _identity() -> None:
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 0


def _run_config(tmp: Path, method: str, **changes: object) -> dict:
    from simulations.run import resolve_run_config

    values = {
        "num-clients": 3,
        "num-rounds": 3,
        "local-epochs": 1,
        "num-shadows": 2,
        "shadow-epochs": 3,
        "unlearn-rounds": 2,
        "ascent-steps": 20,
        "unlearn-method": method,
        "withdrawals": "3:0:samples:0.2",
        "run-dir": str(tmp / "runs"),
        **changes,
    }
    return resolve_run_config(values, None)


def _spy_training(monkeypatch: pytest.MonkeyPatch) -> list[np.ndarray]:
    """Every x the ClientApp trains on (the call that tombstones must keep withdrawn samples out of)."""
    seen: list[np.ndarray] = []
    real_train = training.train

    def spy(model, x, y, **kwargs):  # noqa: ANN001, ANN202
        seen.append(np.asarray(x).copy())
        return real_train(model, x, y, **kwargs)

    monkeypatch.setattr(training, "train", spy)
    return seen


def _trained_on(seen: list[np.ndarray], x: np.ndarray) -> bool:
    return any((batch == x).all(axis=1).any() for batch in seen)


@pytest.mark.parametrize("method", ["gradient-ascent", "pga", "finetune", "retrain", "federaser"])
def test_each_method_goes_through_the_withdrawal_flow(
    tmp_path: Path, method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_config = _run_config(tmp_path, method)
    run = prepare_run(run_config)
    seen = _spy_training(monkeypatch)
    calls_at_request = _mark_request(monkeypatch, seen)
    run_federated_training(InProcessGrid(run_config, tmp_path), run)
    rows = run.record.metrics()

    unlearn = [r for r in rows if is_unlearning_round(r)]
    assert unlearn, "no unlearning round was recorded"
    assert {r["method"] for r in unlearn} == {method}
    assert all(r["round"] == 3 for r in unlearn)
    for r in unlearn:
        assert math.isfinite(r["test-accuracy"]) and 0 <= r["test-accuracy"] <= 1
        assert "fr" in r and "attack-auc" in r and "forget-accuracy" in r, r
        assert r["bytes-down"] > 0 and r["bytes-up"] > 0 and r["client-seconds"] > 0, r
    if method in ("gradient-ascent", "pga"):
        assert [r["masks-accepted"] for r in unlearn] == [1] * len(unlearn)
    elif method == "retrain":
        # Retraining redoes the rounds done so far (1 and 2) from the initial model.
        assert [r["trained-round"] for r in unlearn] == [1, 2]
    elif method == "federaser":
        # Calibration over the stored rounds 1 and 2 (federaser-every = 1), storage cost recorded.
        assert [r["stored-round"] for r in unlearn] == [1, 2]
        assert all(r["storage-bytes"] > 0 for r in unlearn)
    else:
        assert 1 <= len(unlearn) <= run.config.unlearn_rounds

    # Ledger, device receipt, and the model changed by the unlearning.
    (entry,) = run.ledger.entries()
    assert entry.state == DELIVERED and entry.attempts == 1
    receipt = entry.receipt or {}
    assert receipt["method"] == method and receipt["round"] == 3
    assert receipt["unlearn-rounds"] == unlearn[-1]["unlearn-round"]
    assert receipt["cost-client-seconds"] == pytest.approx(sum(r["client-seconds"] for r in unlearn))
    assert receipt["cost-bytes-sent"] == sum(r["bytes-down"] + r["bytes-up"] for r in unlearn)
    if method == "federaser":
        assert receipt["cost-storage-bytes"] == unlearn[-1]["storage-bytes"]
    stored = RequestStore(tmp_path / "dev0.sqlite").get(entry.request_id)
    assert stored.state == "completed" and stored.receipt["model-hash-after"] == receipt["model-hash-after"]
    named = run.record.named_checkpoints()
    before = torch.load(named["before-unlearning"], weights_only=True)
    after = torch.load(named["after-unlearning"], weights_only=True)
    assert model_hash(before) == receipt["model-hash-before"] != receipt["model-hash-after"]
    assert model_hash(after) == receipt["model-hash-after"]

    # Withdrawn samples were never trained on from the request on (retrain's rounds included).
    withdrawn = np.asarray(stored.ids, dtype=np.int64)
    assert len(withdrawn) > 0 and calls_at_request and len(seen) > calls_at_request[0]
    x_all = run.dataset.x_train
    for gid in withdrawn:
        assert not _trained_on(seen[calls_at_request[0] :], x_all[gid]), f"sample {gid} was trained on"
    assert _trained_on(seen[: calls_at_request[0]], x_all[withdrawn[0]])  # the spy does see it before


def _mark_request(monkeypatch: pytest.MonkeyPatch, seen: list[np.ndarray]) -> list[int]:
    """How many training calls had happened when the server began handling the withdrawal."""
    import server.loop

    marks: list[int] = []
    real = server.loop.handle_withdrawals

    def wrapped(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        marks.append(len(seen))
        return real(*args, **kwargs)

    monkeypatch.setattr(server.loop, "handle_withdrawals", wrapped)
    return marks


def test_retrain_through_the_flow_equals_fedavg_from_scratch_without_the_withdrawn_data(
    tmp_path: Path,
) -> None:
    """The server's retrain = the library's FedAvg on the remaining data, same initial model and seeds."""
    from fedforget.federated import fedavg

    run_config = _run_config(tmp_path, "retrain")
    run = prepare_run(run_config)
    run_federated_training(InProcessGrid(run_config, tmp_path), run)
    (entry,) = run.ledger.entries()
    withdrawn = np.asarray(RequestStore(tmp_path / "dev0.sqlite").get(entry.request_id).ids, dtype=np.int64)
    after = torch.load(run.record.named_checkpoints()["after-unlearning"], weights_only=True)
    before = torch.load(run.record.named_checkpoints()["before-unlearning"], weights_only=True)
    reference = fedavg(run.config, exclude={0: withdrawn}, rounds=2, evaluate=False).state_dict
    with_data = fedavg(run.config, rounds=2, evaluate=False).state_dict
    for name, value in reference.items():
        torch.testing.assert_close(after[name], value, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(before[name], with_data[name], rtol=1e-5, atol=1e-6)
    assert any(not torch.allclose(reference[k], with_data[k]) for k in reference)  # the data mattered


def test_federaser_through_the_flow_equals_the_library_calibration(tmp_path: Path) -> None:
    """The server's FedEraser = ``fedforget.baselines.federaser`` over the same stored rounds."""
    from fedforget import baselines
    from fedforget.federated import fedavg

    run_config = _run_config(tmp_path, "federaser")
    run = prepare_run(run_config)
    run_federated_training(InProcessGrid(run_config, tmp_path), run)
    (entry,) = run.ledger.entries()
    withdrawn = np.asarray(RequestStore(tmp_path / "dev0.sqlite").get(entry.request_id).ids, dtype=np.int64)
    after = torch.load(run.record.named_checkpoints()["after-unlearning"], weights_only=True)
    store = baselines.FedEraserStore(every=1)
    trained = fedavg(run.config, rounds=2, evaluate=False, on_round=store)
    original = baselines.Original(run.config, trained.state_dict, federaser=store)
    expected = baselines.federaser(original, {0: withdrawn}).state_dict
    for name, value in expected.items():
        torch.testing.assert_close(after[name], value, rtol=1e-4, atol=1e-5)
    assert any(not torch.allclose(expected[k], trained.state_dict[k]) for k in expected)


def test_a_client_refuses_to_compute_a_server_side_method(tmp_path: Path) -> None:
    """``train.unlearn`` names only client-side methods; anything else is a clear error, not a no-op."""
    from clients.methods import CLIENT_METHODS, compute_delta

    assert CLIENT_METHODS == ("forsaken", "gradient-ascent", "pga")
    with pytest.raises(ValueError, match="computes only forsaken, gradient-ascent, pga"):
        compute_delta("retrain", None, None, (np.zeros((1, 2)), np.zeros(1)))  # type: ignore[arg-type]


def test_a_server_side_attempt_whose_round_fails_leaves_the_model_and_is_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """finetune: every training reply of the first attempt fails -> nothing applied, retried next round."""
    from flwr.app import Error, Message

    import server.loop

    attempt = {"n": 0, "inside": False}
    real = server.loop.handle_withdrawals

    def wrapped(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        attempt["n"] += 1
        attempt["inside"] = True
        try:
            return real(*args, **kwargs)
        finally:
            attempt["inside"] = False

    def fail_first_attempt(reply: Message) -> Message:
        if attempt["inside"] and attempt["n"] == 1 and reply.metadata.message_type == "train":
            return Message(Error(code=0, reason="device lost power"), reply_to=_stub_of(reply))
        return reply

    monkeypatch.setattr(server.loop, "handle_withdrawals", wrapped)
    run_config = _run_config(tmp_path, "finetune", **{"num-rounds": 4, "checkpoint-every": 1})
    run = prepare_run(run_config)
    run_federated_training(InProcessGrid(run_config, tmp_path, fail_first_attempt), run)
    rows = run.record.metrics()
    failed = [r for r in rows if r.get("event") == "attempt-failed"]
    assert len(failed) == 1 and failed[0]["round"] == 3 and "finetune round failed" in failed[0]["reason"]
    (entry,) = run.ledger.entries()
    assert entry.state == DELIVERED and entry.attempts == 2
    unlearn = [r for r in rows if is_unlearning_round(r)]
    assert {r["round"] for r in unlearn} == {4}  # only the retry produced unlearning rows
    # The failed attempt changed nothing: round 3 trained on round 2's model (without the withdrawn
    # samples), and the retry started from that round-3 model.
    from fedforget.federated import fedavg

    checkpoints = run.record.path / "checkpoints"
    round2 = torch.load(checkpoints / "round-2.pt", weights_only=True)
    round3 = torch.load(checkpoints / "round-3.pt", weights_only=True)
    withdrawn = np.asarray(RequestStore(tmp_path / "dev0.sqlite").get(entry.request_id).ids, dtype=np.int64)
    expected = fedavg(
        run.config, exclude={0: withdrawn}, initial_state=round2, rounds=1, start_round=3, evaluate=False
    ).state_dict
    for name, value in expected.items():
        torch.testing.assert_close(round3[name], value, rtol=1e-5, atol=1e-6)
    assert (entry.receipt or {})["model-hash-before"] == model_hash(round3)


def _stub_of(reply):  # noqa: ANN001, ANN202
    from server.rounds import _stub

    return _stub(reply)
