"""A diverging or collapsed model is reported loudly (console + metrics.jsonl), with what to change."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.supercore.task_identity import TaskIdentity

from fedforget.training_health import COLLAPSE_MARGIN, check_round, majority_rate
from server.loop import run_federated_training
from server.setup import prepare_run
from simulations.run import resolve_run_config, summary_lines
from tests.inprocess import InProcessGrid

HEALTHY = {
    "train_loss": 0.3,
    "test_accuracy": 0.95,
    "initial_loss": 2.3,
    "majority": 0.786,
    "learning_rate": 0.05,
}


@pytest.fixture(autouse=True)
def _identity() -> None:
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 0


def _check(**changes: Any) -> Any:
    return check_round(**{"server_round": 3, **HEALTHY, **changes})


def test_majority_rate() -> None:
    assert majority_rate(np.array([0, 1, 1, 1, 2])) == pytest.approx(0.6)
    assert majority_rate(np.array([], dtype=np.int64)) == 0.0


def test_a_healthy_round_passes() -> None:
    assert _check() is None
    assert _check(test_accuracy=HEALTHY["majority"] + 2 * COLLAPSE_MARGIN) is None


@pytest.mark.parametrize("loss", [8.84, math.nan, math.inf])
def test_a_loss_above_the_untrained_models_is_diverging(loss: float) -> None:
    problem = _check(train_loss=loss)
    assert problem is not None and problem.kind == "diverging" and problem.event == "training-diverging"
    assert "learning-rate=0.01" in problem.advice  # what to change, with the value to try


def test_accuracy_at_the_majority_rate_is_collapsed_from_round_2() -> None:
    problem = _check(test_accuracy=0.7859)  # the shuttle-shaped run of issue 15: 0.7859 every round
    assert problem is not None and problem.kind == "collapsed"
    assert "0.7859" in problem.finding and "0.7860" in problem.finding and "learning-rate" in problem.advice
    assert _check(server_round=1, test_accuracy=0.7859) is None  # one round from random may be weak


def _run_config(tmp: Path, **changes: Any) -> dict[str, Any]:
    values = {
        "dataset": "digits",
        "num-clients": 2,
        "num-rounds": 3,
        "local-epochs": 1,
        "max-train-samples": 400,
        "run-dir": str(tmp / "runs"),
        **changes,
    }
    return resolve_run_config(values, None)


def _health_rows(run_config: dict[str, Any], tmp: Path) -> list[dict[str, Any]]:
    run = prepare_run(run_config)
    run_federated_training(InProcessGrid(run_config, tmp), run)
    rows = [r for r in run.record.metrics() if r.get("phase") == "health"]
    warned = [line for line in summary_lines(run.record) if "!!! WARNING" in line]
    assert len(warned) == len(rows)  # the simulation command's closing summary repeats them
    return rows


def test_the_round_loop_reports_a_failed_training_loudly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # a learning rate 40x too high: the loss stays finite but the model learns nothing
    rows = _health_rows(_run_config(tmp_path, **{"learning-rate": 2.0}), tmp_path)
    assert rows, "no health event for a model that learned nothing"
    assert rows[0]["event"] in ("training-diverging", "training-collapsed")
    assert "learning-rate" in rows[0]["advice"] and rows[0]["majority-rate"] > 0
    out = capsys.readouterr().out
    assert "!!! WARNING: training" in out and "learning-rate=0.4" in out


def test_a_healthy_run_has_no_health_event(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _health_rows(_run_config(tmp_path), tmp_path) == []
    assert "WARNING" not in capsys.readouterr().out


def test_the_shuttle_shaped_csv_trains_past_the_majority_class(tmp_path: Path) -> None:
    """The heavy-tailed, imbalanced table of issue 15 (a tenth of its rows): FedAvg beats the
    majority-class rate by far after 2 rounds (its heavy-tailed columns are robust-scaled)."""
    from fedforget import data
    from fedforget.config import RunConfig
    from fedforget.federated import fedavg
    from simulations.heavy_tailed_csv import CLASS_SIZES, write_csv

    path = write_csv(tmp_path / "shuttle-like.csv", sizes=[max(3, n // 10) for n in CLASS_SIZES])
    config = RunConfig.from_mapping({"dataset": f"csv:{path}", "num-rounds": 2})
    majority = majority_rate(data.load(config).y_test)
    result = fedavg(config)
    accuracy = result.history[-1]["test-accuracy"]
    assert majority == pytest.approx(0.786, abs=0.01)
    assert accuracy > majority + 0.1, (accuracy, majority)
