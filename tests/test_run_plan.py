"""Bad plans are found before any process starts: the split and the withdrawal schedule.

And a scheduled request a device cannot satisfy is stored as ``rejected`` (reason in the receipt)
instead of failing every message of the run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedforget.client_data import ClientData
from fedforget.config import RunConfig
from fedforget.device import Device
from fedforget.splits import SplitError, check_run_plan
from fedforget.withdrawals import WithdrawalError, WithdrawalRequest, check_feasible, parse_schedule
from simulations.run import main as run_main
from simulations.run import resolve_run_config

LABELS = np.array([0, 0, 1, 1, 2, 2, 0, 1])
CLIENTS = [np.array([0, 1, 2, 3]), np.array([4, 5, 6, 7])]


def _check(schedule: str) -> None:
    check_feasible(parse_schedule(schedule), client_train_ids=CLIENTS, labels=LABELS, seed=0)


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ("1:0:class:42", "holds no training samples of class 42 \\(its classes: 0, 1\\)"),
        ("1:0:class:2", "holds no training samples of class 2"),
        ("2:1:samples:100000", "asks for 100000 samples but client 1 holds 4"),
        ("1:0:client;2:0:client", "r2-c0-client: client 0 has no training samples left"),
        ("1:0:client;3:0:samples:1", "no training samples left"),
        ("1:1:samples:3;2:1:samples:2", "asks for 2 samples but client 1 holds 1"),
    ],
)
def test_requests_a_client_cannot_satisfy_are_found(schedule: str, message: str) -> None:
    with pytest.raises(WithdrawalError, match=message):
        _check(schedule)


def test_satisfiable_schedules_pass() -> None:
    _check("1:0:class:1;2:0:samples:2;2:1:client")  # class 1 leaves 2 samples; client 1 once


def test_max_train_samples_too_small_is_found_before_any_process(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with pytest.raises(SplitError, match="only 2 samples remain for 5 clients"):
        check_run_plan(RunConfig.from_mapping({"max-train-samples": 3}))
    # the command line says so in one line and starts nothing (exit 2, no SuperLink)
    assert run_main(["--set", "max-train-samples=3", "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "max-train-samples" in err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ("1:0:class:42", "class 42"),
        ("2:0:samples:100000", "asks for 100000 samples"),
        ("1:0:client;2:0:client", "no training samples left"),
    ],
)
def test_the_simulation_command_checks_the_schedule_against_the_split(
    schedule: str, message: str, tmp_path: Path
) -> None:
    with pytest.raises(SplitError, match=f"Invalid value for 'withdrawals': .*{message}"):
        resolve_run_config({"withdrawals": schedule}, tmp_path)


def test_the_simulation_command_accepts_a_feasible_schedule(tmp_path: Path) -> None:
    config = resolve_run_config({"withdrawals": "2:0:samples:0.05;3:1:class:3"}, tmp_path)
    assert config["withdrawals"] == "2:0:samples:0.05;3:1:class:3"


def test_a_request_the_device_cannot_satisfy_is_rejected_with_its_reason(tmp_path: Path) -> None:
    config = RunConfig.from_mapping({"num-clients": 3, "withdrawals": "1:0:class:42;2:0:samples:0.1"})
    device = Device.open(config, 0, tmp_path / "dev.sqlite")
    problems = device.sync_schedule(1)  # before: WithdrawalError on every message of the run
    assert len(problems) == 1 and "class 42" in problems[0]
    (rejected,) = device.store.all()
    assert rejected.request_id == WithdrawalRequest(1, 0, "class", 42.0).request_id
    assert rejected.state == "rejected" and rejected.ids.size == 0
    assert rejected.receipt is not None and "class 42" in rejected.receipt["note"]
    assert device.store.pending() == [] and device.store.tombstoned().size == 0
    assert device.sync_schedule(1) == []  # not retried, not raised again
    device.sync_schedule(2)  # a later, satisfiable request of the same device still goes through
    states = {r.request_id: r.state for r in device.store.all()}
    assert states == {rejected.request_id: "rejected", "r2-c0-samples-0.1": "pending"}
    assert len(device.training_data().train_ids) < len(ClientData.for_partition(config, 0).train_ids)
