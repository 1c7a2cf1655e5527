"""``fedforget verify`` on a real run record, and what a request found before training gets.

One in-process run (the real server loop and ClientApp, tests/inprocess.py) with three requests: one
found at round 1, before the model was trained (excluded, not unlearned), and one at each of rounds 2
and 3 (two unlearnings in one run, each with its own pair of checkpoints).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from flwr.supercore.task_identity import TaskIdentity

from fedforget.cli import main as cli_main
from fedforget.config import RunConfig
from fedforget.request_store import RequestStore
from fedforget.verify import model_hash, verify_record
from server.ledger import Ledger
from server.loop import run_federated_training
from server.requests import EXCLUDED_BEFORE_TRAINING
from server.setup import ledger_path, prepare_run
from simulations.run import resolve_run_config
from tests.inprocess import InProcessGrid

SCHEDULE = "1:1:samples:0.05; 2:0:samples:0.1; 3:1:samples:0.1"


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 0
    tmp = tmp_path_factory.mktemp("verify")
    run_config = resolve_run_config(
        {
            "num-clients": 2,
            "num-rounds": 3,
            "local-epochs": 1,
            "max-train-samples": 400,
            "num-shadows": 2,
            "shadow-epochs": 1,
            "unlearn-rounds": 1,
            "forsaken-steps": 3,
            "withdrawals": SCHEDULE,
            "run-dir": str(tmp / "runs"),
        },
        None,
    )
    run = prepare_run(run_config)
    run_federated_training(InProcessGrid(run_config, tmp), run)
    return run.record.path, run_config


def _receipts(record: Path) -> dict[str, dict]:
    return {
        w["request-id"]: w["receipt"]
        for w in json.loads((record / "withdrawals.json").read_text())["requests"]
    }


def test_every_receipt_of_a_real_run_verifies(
    finished: tuple[Path, dict], capsys: pytest.CaptureFixture[str]
) -> None:
    record, _ = finished
    receipts = _receipts(record)
    assert set(receipts) == {"r1-c1-samples-0.05", "r2-c0-samples-0.1", "r3-c1-samples-0.1"}
    # two unlearnings in one run: each receipt names its own checkpoints
    second, third = receipts["r2-c0-samples-0.1"], receipts["r3-c1-samples-0.1"]
    names = {second["checkpoint-before"], second["checkpoint-after"]}
    assert names.isdisjoint({third["checkpoint-before"], third["checkpoint-after"]})
    for receipt in (second, third):
        before = torch.load(record / "checkpoints" / f"{receipt['checkpoint-before']}.pt", weights_only=True)
        assert model_hash(before) == receipt["model-hash-before"] != receipt["model-hash-after"]
    checked, problems = verify_record(record)
    assert problems == [] and checked == 6
    assert cli_main(["verify", str(record)]) == 0
    assert capsys.readouterr().out.startswith("ok: 6 model hashes")


def test_a_tampered_checkpoint_fails_verification(
    finished: tuple[Path, dict], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    record, _ = finished
    copy = tmp_path / record.name
    shutil.copytree(record, copy)
    receipt = _receipts(copy)["r3-c1-samples-0.1"]
    path = copy / "checkpoints" / f"{receipt['checkpoint-after']}.pt"
    state = torch.load(path, weights_only=True)
    first = sorted(state)[0]
    state[first] = state[first] + 1e-3  # a small, plausible change of the model
    torch.save(state, path)
    checked, problems = verify_record(copy)
    assert checked == 6 and len(problems) == 1
    assert problems[0].startswith("1:r3-c1-samples-0.1: model-hash-after is ") and str(path) in problems[0]
    assert cli_main(["verify", str(copy)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [f"mismatch: {problems[0]}"]
    (copy / "checkpoints" / f"{receipt['checkpoint-before']}.pt").unlink()
    assert any("is missing" in p for p in verify_record(copy)[1])
    assert cli_main(["verify", str(tmp_path / "nothing")]) == 2
    assert "is not a run record" in capsys.readouterr().err


def test_a_request_found_before_the_first_training_round_is_excluded_not_unlearned(
    finished: tuple[Path, dict], tmp_path: Path
) -> None:
    record, run_config = finished
    receipt = _receipts(record)["r1-c1-samples-0.05"]
    assert receipt["method"] == "none" and receipt["unlearn-rounds"] == 0
    assert receipt["model-hash-before"] == receipt["model-hash-after"]
    assert "never learned them" in receipt["note"] and "fr" not in receipt
    initial = torch.load(record / "checkpoints" / "round-0.pt", weights_only=True)
    assert receipt["model-hash-before"] == model_hash(initial)  # the untrained model
    rows = [json.loads(line) for line in (record / "metrics.jsonl").read_text().splitlines()]
    excluded = [r for r in rows if r.get("event") == EXCLUDED_BEFORE_TRAINING]
    assert [(r["round"], r["request-ids"]) for r in excluded] == [(1, ["r1-c1-samples-0.05"])]
    unlearned = [r["request-ids"] for r in rows if r.get("phase") == "unlearn" and "unlearn-round" in r]
    assert all("r1-c1-samples-0.05" not in ids for ids in unlearned) and len(unlearned) == 2
    ledger = Ledger(ledger_path(RunConfig.from_mapping(run_config)), run_config["run-id"])
    entry = ledger.get(1, "r1-c1-samples-0.05")
    assert entry is not None and entry.state == "receipt-delivered"
    assert entry.outcome == EXCLUDED_BEFORE_TRAINING
    stored = RequestStore(Path(run_config["run-dir"]).parent / "dev1.sqlite").get("r1-c1-samples-0.05")
    assert stored.state == "completed" and stored.detail == EXCLUDED_BEFORE_TRAINING
    assert stored.receipt is not None and stored.receipt["note"] == receipt["note"]
