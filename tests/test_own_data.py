"""Devices that hold only their own data (``client-data = own``): loading, split, validation, and a
server that accepts and unlearns their requests holding only its auxiliary file.

Files are written from scikit-learn's bundled digits (no ../shared needed). The end-to-end test runs
the real server loop and the real ClientApp handlers in one process (``tests/inprocess.py``).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Context, Message, MessageType, RecordDict
from sklearn.datasets import load_digits

from fedforget import data
from fedforget.client_data import (
    ClientData,
    OwnData,
    OwnDataError,
    info_from_message,
    model_input_config,
    split_for,
)
from fedforget.config import ConfigError, RunConfig
from fedforget.device import Device
from fedforget.withdrawals import WithdrawalRequest


def write_csv(path: Path, x: np.ndarray, y: np.ndarray, labels: list | None = None) -> Path:
    """A device file: header ``f0..f{d-1},label``, one sample per row."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow([f"f{j}" for j in range(x.shape[1])] + ["label"])
        for row, label in zip(x, labels if labels is not None else y.tolist(), strict=True):
            out.writerow([f"{v:g}" for v in row] + [label])
    return path


def digits_files(folder: Path, num_devices: int = 3) -> tuple[Path, list[Path]]:
    """The server's aux file (every class) and one file per device, disjoint, from digits."""
    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(y))
    server, rest = order[:450], order[450:]
    server_file = write_csv(folder / "server" / "aux.csv", x[server], y[server])
    device_files = [
        write_csv(folder / f"device-{i}" / "mine.csv", x[part], y[part])
        for i, part in enumerate(np.array_split(rest, num_devices))
    ]
    return server_file, device_files


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    return digits_files(tmp_path_factory.mktemp("own"))


# ----------------------------------------------------------------------------------- device loading
def test_a_device_splits_its_own_file_deterministically(files: tuple[Path, list[Path]]) -> None:
    _, devices = files
    own = OwnData(str(devices[0]), holdout_fraction=0.25, seed=3)
    data = ClientData.from_file(own, 0, num_classes=10, input_shape=(64,))
    n = len(data.train_ids) + len(data.holdout_ids)
    assert n == len(devices[0].read_text().splitlines()) - 1  # every row of the file, nothing else
    assert np.array_equal(np.sort(np.concatenate([data.train_ids, data.holdout_ids])), np.arange(n))
    assert len(data.holdout_ids) == round(0.25 * n)
    again = ClientData.from_file(own, 0, num_classes=10, input_shape=(64,))
    assert np.array_equal(again.train_ids, data.train_ids) and np.array_equal(again.x_train, data.x_train)
    other = ClientData.from_file(OwnData(str(devices[0]), 0.25, seed=4), 0)
    assert not np.array_equal(other.holdout_ids, data.holdout_ids)
    assert data.x_train.shape[1:] == (64,) and data.x_train.dtype == np.float32


def test_a_device_keeps_its_labels_when_it_lacks_classes(tmp_path: Path) -> None:
    # The loader codes labels by sorted distinct value; a device holding only classes 3 and 7 must
    # still train on labels 3 and 7 (not 0 and 1).
    x, y = load_digits(return_X_y=True)
    keep = np.isin(y, (3, 7))
    path = write_csv(tmp_path / "two.csv", x[keep], y[keep])
    data = ClientData.from_file(OwnData(str(path)), 0, num_classes=10, input_shape=(64,))
    assert set(np.unique(np.concatenate([data.y_train, data.y_holdout])).tolist()) == {3, 7}
    # Rows keep their label: row features match the file's rows of that label.
    xs, ys = OwnData(str(path)).rows()
    assert sorted(np.bincount(ys, minlength=10)[[3, 7]].tolist()) == sorted(
        [int((y[keep] == 3).sum()), int((y[keep] == 7).sum())]
    )


@pytest.mark.parametrize(
    ("features", "labels", "message"),
    [
        (30, None, r"samples of shape \(30,\).*run's model takes \(64,\)"),
        (64, ["12", "3"] * 10, r"labels \[12\] outside the run's classes 0\.\.9"),
        (
            64,
            ["cat", "dog"] * 10,
            r"labels must be the run's class indices 0, 1, \.\.\.; the file holds 'cat'",
        ),
        (64, ["-1", "2"] * 10, r"labels must be the run's class indices"),
        (64, ["1.5", "2"] * 10, r"labels must be the run's class indices"),
    ],
)
def test_a_device_file_that_does_not_fit_the_run_is_a_one_line_error(
    tmp_path: Path, features: int, labels: list | None, message: str
) -> None:
    x = np.random.default_rng(0).normal(size=(20, features))
    y = np.arange(20) % 10
    path = write_csv(tmp_path / "bad.csv", x, y, labels)
    with pytest.raises(OwnDataError, match=message) as error:
        ClientData.from_file(OwnData(str(path)), 0, num_classes=10, input_shape=(64,))
    assert "\n" not in str(error.value)


def test_node_config_names_the_file_and_its_split(files: tuple[Path, list[Path]]) -> None:
    _, devices = files
    own = OwnData.from_node_config({"data": str(devices[1]), "holdout-fraction": 0.1, "seed": 2})
    assert own == OwnData(str(devices[1]), 0.1, 2) and own.dataset_name == f"csv:{devices[1]}"
    assert OwnData("/x/y.NPZ").dataset_name == "npz:/x/y.NPZ"
    assert OwnData("npz:/x/y.bin").dataset_name == "npz:/x/y.bin"
    with pytest.raises(OwnDataError, match="names no data file"):
        OwnData.from_node_config({"partition-id": 0})
    with pytest.raises(OwnDataError, match="holdout-fraction=1.0"):
        OwnData.from_node_config({"data": "a.csv", "holdout-fraction": 1.0})
    with pytest.raises(OwnDataError, match="does not exist"):
        OwnData("/no/such/file.csv").rows()


def test_an_npz_device_file_works_too(tmp_path: Path) -> None:
    x, y = load_digits(return_X_y=True)
    np.savez(tmp_path / "mine.npz", x=x[:100], y=y[:100])
    data = ClientData.from_file(OwnData(str(tmp_path / "mine.npz")), 2, num_classes=10, input_shape=(64,))
    assert len(data.train_ids) + len(data.holdout_ids) == 100 and data.partition_id == 2


def test_an_own_data_device_withdraws_by_its_own_ids(files: tuple[Path, list[Path]], tmp_path: Path) -> None:
    _, devices = files
    config = RunConfig.from_mapping(
        {"client-data": "own", "num-clients": 3, "dataset": "csv:/server/only.csv"}
    )
    info = info_from_message(model_input_config(load_digits_info()))
    device = Device.open_own(
        config, OwnData(str(devices[2])), tmp_path / "s.sqlite", partition_id=2, info=info
    )
    stored = device.withdraw(WithdrawalRequest(1, 2, "class", 4.0))
    ids, x, y = device.forget_set([stored.request_id])
    assert (y == 4).all() and len(ids) == int((device.data.y_train == 4).sum()) > 0
    assert not np.isin(ids, device.training_data().train_ids).any()  # tombstoned at once


def load_digits_info():  # noqa: ANN201
    return data.info("digits")


def test_the_message_carries_the_models_input_and_classes() -> None:
    info = load_digits_info()
    sent = model_input_config(info)
    assert sent == {"input-shape": [64], "num-classes": 10}
    got = info_from_message({"server-round": 1, **sent})
    assert (got.input_shape, got.num_classes, got.kind) == ((64,), 10, "tabular")
    with pytest.raises(OwnDataError, match="lacks input-shape, num-classes"):
        info_from_message({"server-round": 1})


# ----------------------------------------------------------------------------------- config / server
def test_config_client_data_values() -> None:
    assert RunConfig().client_data == "shared"
    with pytest.raises(ConfigError, match="'client-data'"):
        RunConfig.from_mapping({"client-data": "mine"})
    with pytest.raises(ConfigError, match="'retrain-reference'.*client-data=own"):
        RunConfig.from_mapping({"client-data": "own", "retrain-reference": 1})
    with pytest.raises(ConfigError, match="'min-forget-samples'"):
        RunConfig.from_mapping({"min-forget-samples": 0})


def test_the_servers_split_holds_no_client_part(files: tuple[Path, list[Path]]) -> None:
    server_file, _ = files
    config = RunConfig.from_mapping({"client-data": "own", "dataset": f"csv:{server_file}", "num-clients": 3})
    split = split_for(config)
    assert split.clients == ()
    loaded = data.load_dataset(f"csv:{server_file}")  # the loader's own 80/20 of the file's 450 rows
    assert np.array_equal(split.aux_ids, np.arange(loaded.num_train))  # all of its train part is aux
    assert np.array_equal(split.test_ids, np.arange(len(loaded.y_test)))
    assert loaded.num_train + len(loaded.y_test) == 450


def _own_run_config(tmp: Path, server_file: Path, **changes: object) -> dict:
    from simulations.run import resolve_run_config

    values = {
        "client-data": "own",
        "dataset": f"csv:{server_file}",
        "num-clients": 3,
        "num-rounds": 2,
        "local-epochs": 1,
        "num-shadows": 2,
        "shadow-epochs": 2,
        "unlearn-rounds": 1,
        "unlearn-method": "gradient-ascent",
        "ascent-steps": 5,
        "withdrawals": "2:1:samples:3",
        "run-dir": str(tmp / "runs"),
        **changes,
    }
    return resolve_run_config(values, None)


def test_the_server_rejects_an_aux_file_not_labelled_by_class_index(tmp_path: Path) -> None:
    from server.setup import prepare_run

    x, y = load_digits(return_X_y=True)
    bad = write_csv(tmp_path / "aux.csv", x[:200], y[:200], [f"digit-{v}" for v in y[:200]])
    with pytest.raises(ConfigError, match="class indices 0..K-1") as error:
        prepare_run(_own_run_config(tmp_path, bad))
    assert "\n" not in str(error.value)


def test_the_server_checks_only_the_shape_of_an_own_data_request(
    files: tuple[Path, list[Path]], tmp_path: Path
) -> None:
    from server.evaluator import ForgettingEvaluator
    from server.setup import prepare_run

    server_file, _ = files
    run = prepare_run(_own_run_config(tmp_path, server_file))
    evaluator = ForgettingEvaluator(run)
    assert evaluator._not_its_own(1, np.array([0, 5, 999_999])) == ""  # the device's own ids: trusted
    assert "names no samples" in evaluator._not_its_own(1, np.array([], dtype=np.int64))
    assert "twice" in evaluator._not_its_own(1, np.array([4, 4]))
    assert "negative" in evaluator._not_its_own(1, np.array([-1, 2]))
    assert "outside [0, num-clients=3)" in evaluator._not_its_own(3, np.array([1]))
    assert run.split.clients == () and len(run.split.aux_ids) == run.dataset.num_train


def test_a_federation_of_own_data_devices_unlearns_a_withdrawal(
    files: tuple[Path, list[Path]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Server: only aux.csv. Devices: only their own file. Devices 1 and 2 each withdraw their class-4
    samples, by their own ids, which overlap: the server keeps them apart by partition."""
    from flwr.supercore.task_identity import TaskIdentity

    from server.loop import run_federated_training
    from server.setup import prepare_run
    from tests.inprocess import InProcessGrid

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 0
    server_file, devices = files
    run_config = _own_run_config(tmp_path, server_file, withdrawals="2:1:class:4; 2:2:class:4")
    run = prepare_run(run_config)
    own_ids = {}
    for pid in (1, 2):
        mine = ClientData.from_file(OwnData(str(devices[pid])), pid)
        own_ids[pid] = mine.train_ids[mine.y_train == 4]
    assert np.intersect1d(own_ids[1], own_ids[2]).size > 0  # the same ids name different samples
    # From here on the server process may read only its own file: any other file read fails the run.
    real_load = data.load_dataset
    server_reads: list[str] = []

    def guarded(name: str, data_dir=None):  # noqa: ANN001, ANN202
        server_reads.append(name)
        return real_load(name, data_dir)

    monkeypatch.setattr(data, "load_dataset", guarded)
    grid = InProcessGrid(run_config, tmp_path)
    for context in grid.contexts.values():
        context.node_config["data"] = str(devices[int(context.node_config["partition-id"])])
        del context.node_config["num-partitions"]
    run_federated_training(grid, run)

    # Every read is the server's own file or a device reading its own; every device read its file.
    assert set(server_reads) <= {f"csv:{p}" for p in [server_file, *devices]}
    assert {f"csv:{p}" for p in devices} <= set(server_reads)
    withdrawals = {w["client"]: w for w in run.record.read_json("withdrawals.json")["requests"]}
    assert set(withdrawals) == {1, 2}
    for pid, entry in withdrawals.items():
        assert entry["global-ids"] == own_ids[pid].tolist() and entry["outcome"].startswith("unlearned")
        assert entry["receipt"]["model-hash-before"] != entry["receipt"]["model-hash-after"]
    rows = run.record.metrics()
    unlearn = [r for r in rows if r.get("phase") == "unlearn" and "masks-accepted" in r]
    assert unlearn and unlearn[0]["masks-accepted"] == 2
    measured = [r for r in rows if "num-forget" in r and "fr" in r]
    assert measured and all(r["num-forget"] == len(own_ids[1]) + len(own_ids[2]) for r in measured)
    assert [r["round"] for r in rows if r.get("phase") == "train"] == [1, 2]
    assert all(r["clients"] == 3 and r["failures"] == 0 for r in rows if r.get("phase") == "train")
    # The device's ids are its own row ids, and its request is completed with the receipt.
    device_context = grid.contexts[grid.node_of(1)]
    store_path = device_context.node_config["request-store"]
    from fedforget.request_store import RequestStore

    (stored,) = RequestStore(store_path).all()
    assert stored.state == "completed" and stored.receipt is not None
    assert np.array_equal(np.sort(stored.ids), own_ids[1])


def test_a_device_without_its_file_answers_with_a_clear_error(
    files: tuple[Path, list[Path]], tmp_path: Path
) -> None:
    from clients.context import client_setup

    server_file, _ = files
    context = Context(
        run_id=1,
        node_id=7,
        node_config={"partition-id": 0, "request-store": str(tmp_path / "s.sqlite")},
        state=RecordDict(),
        run_config={"client-data": "own", "dataset": f"csv:{server_file}", "num-clients": 3},
    )
    from flwr.app import ConfigRecord

    msg = Message(
        RecordDict(
            {
                "config": ConfigRecord(
                    {"server-round": 1, "model": "mlp", **model_input_config(load_digits_info())}
                )
            }
        ),
        dst_node_id=7,
        message_type=f"{MessageType.QUERY}.requests",
    )
    with pytest.raises(OwnDataError, match="names no data file"):
        client_setup(msg, context)
