"""The ClientApp's handlers called directly, and FedAvg aggregation against a hand computation."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from clients.app import app as client_app
from fedforget import data, models, training
from fedforget.client_data import ClientData
from fedforget.config import RunConfig
from server.loop import make_strategy
from server.setup import PreparedRun


@pytest.fixture(autouse=True)
def _task_identity() -> None:
    """Messages need a task identity; Flower sets it in its own processes."""
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 0


CONFIG = RunConfig.from_mapping({"num-clients": 3, "model": "mlp", "seed": 3})


def _train_message(state: dict[str, torch.Tensor], node_id: int = 7) -> Message:
    content = RecordDict(
        {"arrays": ArrayRecord(state), "config": ConfigRecord({"server-round": 2, "model": "mlp"})}
    )
    return Message(content, dst_node_id=node_id, message_type="train")


@pytest.fixture(autouse=True)
def _store_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.modules[__name__], "STORE_DIR", tmp_path)


STORE_DIR = Path(".")


def _context(partition_id: int, num_partitions: int = 3, config: RunConfig = CONFIG) -> Context:
    store = STORE_DIR / f"client-{partition_id}.sqlite"
    return Context(
        run_id=1,
        node_id=7,
        node_config={
            "partition-id": partition_id,
            "num-partitions": num_partitions,
            "request-store": str(store),
        },
        state=RecordDict(),
        run_config=config.to_dict(),
    )


def test_client_trains_on_its_own_partition_and_returns_a_changed_model() -> None:
    model = models.build_model("mlp", data.info("digits"), seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    reply = client_app(_train_message(before), _context(partition_id=1))
    assert not reply.has_error(), reply.error
    metrics = reply.content["metrics"]
    expected = ClientData.for_partition(CONFIG, 1)
    assert metrics["num-examples"] == len(expected.train_ids)
    assert metrics["partition-id"] == 1
    after = reply.content["arrays"].to_torch_state_dict()
    assert after.keys() == before.keys()
    assert any(not torch.equal(after[k], before[k]) for k in before)
    assert np.isfinite(metrics["train-loss"])


def test_tombstoned_samples_are_never_trained_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """Instrument the training call: a withdrawn sample must never reach it again."""
    from fedforget.device import Device

    seen: list[np.ndarray] = []
    real_train = training.train

    def spy(model, x, y, **kwargs):  # noqa: ANN001, ANN202
        seen.append(np.asarray(x).copy())
        return real_train(model, x, y, **kwargs)

    monkeypatch.setattr(training, "train", spy)
    context = _context(partition_id=2)
    device = Device.open(CONFIG, 2, context.node_config["request-store"])
    withdrawn = device.data.train_ids[::7]
    device.store.add("samples", withdrawn, owned_ids=device.data.train_ids)
    state = models.build_model("mlp", data.info("digits"), seed=0).state_dict()
    reply = client_app(_train_message(state), context)
    assert not reply.has_error()
    x_all = data.load(CONFIG).x_train
    used = seen[-1]
    assert len(used) == len(device.data.train_ids) - len(withdrawn)
    for gid in withdrawn:
        assert not (used == x_all[gid]).all(axis=1).any(), f"withdrawn sample {gid} was trained on"
    # ... and it stays so after a "restart": a fresh Device over the same store file.
    reopened = Device.open(CONFIG, 2, context.node_config["request-store"])
    assert np.intersect1d(reopened.training_data().train_ids, withdrawn).size == 0


def test_requests_query_reports_the_store(monkeypatch: pytest.MonkeyPatch) -> None:
    config = CONFIG.replace(withdrawals="1:0:class:3", num_rounds=2)
    context = _context(partition_id=0, config=config)
    msg = Message(
        RecordDict({"config": ConfigRecord({"server-round": 1, "model": "mlp"})}),
        dst_node_id=7,
        message_type="query.requests",
    )
    reply = client_app(msg, context)
    summary = reply.content["requests"]
    assert list(summary["request-ids"]) == ["r1-c0-class-3"] and list(summary["states"]) == ["pending"]
    ids = np.asarray(reply.content["ids"]["r1-c0-class-3"])
    part = ClientData.for_partition(config, 0)
    np.testing.assert_array_equal(ids, part.train_ids[part.y_train == 3])


def test_client_update_is_reproducible() -> None:
    state = models.build_model("mlp", data.info("digits"), seed=0).state_dict()
    first = client_app(_train_message(state), _context(0)).content["arrays"].to_torch_state_dict()
    second = client_app(_train_message(state), _context(0)).content["arrays"].to_torch_state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_client_rejects_a_node_config_that_disagrees_with_the_run() -> None:
    state = models.build_model("mlp", data.info("digits"), seed=0).state_dict()
    with pytest.raises(ValueError, match=r"num-partitions=4 .* num-clients=3"):
        client_app(_train_message(state), _context(partition_id=0, num_partitions=4))


def _reply(arrays: dict[str, np.ndarray], num_examples: int, loss: float, node_id: int) -> Message:
    instruction = Message(RecordDict(), dst_node_id=node_id, message_type="train")
    content = RecordDict(
        {
            "arrays": ArrayRecord({k: torch.tensor(v) for k, v in arrays.items()}),
            "metrics": MetricRecord({"num-examples": num_examples, "train-loss": loss}),
        }
    )
    return Message(content, reply_to=instruction)


def test_fedavg_aggregation_matches_hand_computation() -> None:
    run = PreparedRun(CONFIG, None, None, None, None, None)  # type: ignore[arg-type]
    strategy = make_strategy(run)
    a = {"w": np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32), "b": np.array([1.0], dtype=np.float32)}
    b = {"w": np.array([[5.0, 6.0], [7.0, 8.0]], dtype=np.float32), "b": np.array([-3.0], dtype=np.float32)}
    c = {"w": np.zeros((2, 2), dtype=np.float32), "b": np.array([10.0], dtype=np.float32)}
    replies = [_reply(a, 10, 1.0, 1), _reply(b, 30, 2.0, 2), _reply(c, 60, 4.0, 3)]
    arrays, metrics = strategy.aggregate_train(1, replies)
    assert arrays is not None and metrics is not None
    got = arrays.to_torch_state_dict()
    # Hand computation: weights 0.1, 0.3, 0.6.
    np.testing.assert_allclose(got["w"].numpy(), [[1.6, 2.0], [2.4, 2.8]], rtol=1e-6)
    np.testing.assert_allclose(got["b"].numpy(), [0.1 * 1 + 0.3 * -3 + 0.6 * 10], rtol=1e-6)
    assert metrics["train-loss"] == pytest.approx(0.1 * 1.0 + 0.3 * 2.0 + 0.6 * 4.0)


def test_strategy_samples_clients_per_round() -> None:
    config = RunConfig.from_mapping({"num-clients": 10, "clients-per-round": 4})
    strategy = make_strategy(PreparedRun(config, None, None, None, None, None))  # type: ignore[arg-type]
    assert strategy.fraction_train == pytest.approx(0.4)
    assert strategy.min_train_nodes == 4 and strategy.min_available_nodes == 10


def test_pyproject_run_config_matches_runconfig_defaults() -> None:
    """Flower's run config (pyproject) and RunConfig must declare the same keys and defaults."""
    from simulations.run import app_defaults

    assert app_defaults() == RunConfig().to_dict()


def test_round_table_prints_aligned_rows_and_dashes_for_missing_values(tmp_path: Path) -> None:
    import io

    from server.console import RoundTable

    out = io.StringIO()
    table = RoundTable(tmp_path, stream=out)
    table.print_row({"round": 0, "phase": "init", "test-accuracy": 0.1, "test-loss": 2.3})
    table.print_row(
        {
            "round": 1,
            "phase": "train",
            "test-accuracy": 0.5,
            "test-loss": 1.0,
            "train-loss": 1.2,
            "clients": 3,
            "fr": float("nan"),
            "seconds": 0.4,
        }
    )
    lines = out.getvalue().splitlines()
    assert lines[0] == f"[fedforget] run record: {tmp_path}"
    assert "test acc" in lines[1] and "FR" in lines[1]
    assert len(lines[2]) == len(lines[3]) == len(lines[1])
    assert lines[3].split()[1:4] == ["1", "train", "0.5000"] and " - " in lines[3]
