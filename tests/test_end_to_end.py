"""Real Flower runs: a simulation through ``flwr run``, a failing run, and a loopback deployment.

Each test starts its own SuperLink (and SuperNodes) on 127.0.0.1 and stops them by PID.
"""

from __future__ import annotations

import io
import json
import os
import signal
from pathlib import Path

import pytest
import torch

from fedforget import data
from fedforget.records import RunRecord
from fedforget.splits import Split
from fedforget.training import evaluate
from simulations.launcher import FlowerRunError, federation, run_status, submit_run
from simulations.run import main, resolve_run_config, simulate

pytestmark = pytest.mark.slow


def _assert_complete_record(record: RunRecord, num_clients: int, num_rounds: int) -> None:
    config = record.config()
    assert config.num_clients == num_clients and config.model == "mlp"
    split = record.split()
    assert isinstance(split, Split) and split.num_clients == num_clients
    rows = record.metrics()
    train_rows = [r for r in rows if r["phase"] == "train"]
    assert [r["round"] for r in train_rows] == list(range(1, num_rounds + 1))
    assert all(r["clients"] == num_clients and r["failures"] == 0 for r in train_rows)
    assert rows[-1]["event"] == "run-finished"
    # A third party rebuilds the model from the record and reproduces the logged accuracy.
    model = record.load_model(num_rounds)
    dataset = data.load(config)
    accuracy = evaluate(model, dataset.x_test, dataset.y_test).accuracy
    assert accuracy == pytest.approx(train_rows[-1]["test-accuracy"], abs=1e-9)
    init = next(r for r in rows if r["phase"] == "init")
    assert train_rows[-1]["test-accuracy"] > init["test-accuracy"] + 0.2


def test_simulation_three_clients_two_rounds(tmp_path: Path) -> None:
    run_config = resolve_run_config(
        {"num-clients": 3, "num-rounds": 2, "local-epochs": 2, "run-dir": str(tmp_path)}, None
    )
    stream = io.StringIO()
    record = simulate(run_config, stream=stream)
    assert record.path == tmp_path / run_config["run-id"]
    _assert_complete_record(record, num_clients=3, num_rounds=2)
    # The per-round table reached the console.
    # The server's console output reached us through `flwr log` (best effort under load).
    assert "[fedforget] run record:" in stream.getvalue(), stream.getvalue()[-2000:]


def test_a_failed_flower_run_fails_loudly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A huge learning rate makes every client diverge: the ServerApp raises, the run is marked
    # failed, and the runner must exit non-zero although `flwr run` itself exits 0.
    code = main(
        [
            "--num-clients",
            "2",
            "--num-rounds",
            "1",
            "--runs-dir",
            str(tmp_path),
            "--set",
            "learning-rate=1e12",
        ]
    )
    assert code == 1
    assert "ended with status 'finished:failed'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--num-clients", "0"], "num-clients"),
        (["--set", "alpha=0"], "alpha"),
        (["--dataset", "mnistt"], "mnist"),
        (["--set", "num-clientz=3"], "Did you mean 'num-clients'"),
    ],
)
def test_runner_rejects_bad_input_before_starting_flower(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(args) == 2
    assert message in capsys.readouterr().err


def test_runner_names_the_places_searched_when_data_is_missing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FEDFORGET_DATA", str(tmp_path / "nowhere"))
    assert main(["--dataset", "letter", "--set", f"data-dir={json.dumps(str(tmp_path / 'missing'))}"]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "missing") in err


def test_deployment_superlink_and_two_supernodes(tmp_path: Path) -> None:
    run_config = resolve_run_config(
        {"num-clients": 2, "num-rounds": 2, "local-epochs": 2, "run-dir": str(tmp_path)}, None
    )
    with federation(simulation=False) as fed:
        nodes = [fed.start_supernode(pid, 2) for pid in range(2)]
        outcome = submit_run(fed, run_config, timeout_s=600)
        assert run_status(fed, outcome.run_id) == "finished:completed"
        assert all(node.alive() for node in nodes)
        pids = [fed.superlink.pid] + [node.pid for node in nodes]
    # Everything we started is gone.
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, signal.SIG_DFL)
    record = RunRecord(tmp_path / run_config["run-id"])
    _assert_complete_record(record, num_clients=2, num_rounds=2)
    assert isinstance(record.load_checkpoint(), dict)
    assert torch.is_tensor(next(iter(record.load_checkpoint(0).values())))


def test_federation_stops_processes_even_when_the_body_raises() -> None:
    with pytest.raises(RuntimeError, match="boom"), federation(simulation=False) as fed:
        pid = fed.superlink.pid
        raise RuntimeError("boom")
    with pytest.raises(ProcessLookupError):
        os.kill(pid, signal.SIG_DFL)
    assert FlowerRunError
