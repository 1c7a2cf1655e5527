"""Tests for run records (fedforget.records)."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import numpy as np
import pytest
import torch

from fedforget.config import RunConfig
from fedforget.data import load_dataset
from fedforget.models import build
from fedforget.records import RunRecord, is_unlearning_round
from fedforget.splits import make_split


def _config(tmp_path: Path, **changes: object) -> RunConfig:
    values = {"dataset": "digits", "model": "mlp", "num-clients": 3, "seed": 4, "run-id": "run-a"}
    return RunConfig.from_mapping({**values, "run-dir": str(tmp_path), **changes})


def _no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.rglob(".*") if p.is_file()]


def test_create_writes_config_json_with_every_key_and_the_environment(tmp_path: Path) -> None:
    config = _config(tmp_path, alpha=0.7, **{"learning-rate": 0.01})
    record = RunRecord.create(config, environment={"flwr": "9.9.9", "host": "test"})
    assert record.path == (tmp_path / "run-a").resolve()
    assert (record.path / "checkpoints").is_dir()
    assert (record.path / "config.json").is_file()

    doc = json.loads((record.path / "config.json").read_text())
    assert set(doc) == set(config.to_dict()) | {"environment"}
    assert all("_" not in key for key in doc)
    for key, value in config.to_dict().items():
        assert doc[key] == value, key
    env = doc["environment"]
    assert env["python"] == platform.python_version()
    assert env["torch"] == torch.__version__
    assert env["flwr"] == "9.9.9" and env["host"] == "test"
    assert env["created"][:4].isdigit()
    # Reading back gives the same config; the environment is not part of it.
    assert record.config() == config
    assert record.metrics() == []
    assert record.checkpoints() == {}
    assert _no_temp_files(record.path)


def test_create_never_overwrites_an_existing_record(tmp_path: Path) -> None:
    first = RunRecord.create(_config(tmp_path))
    before = (first.path / "config.json").read_bytes()
    with pytest.raises(FileExistsError) as raised:
        RunRecord.create(_config(tmp_path, seed=99))
    # one line that says what to do (it ends the ServerApp's log of a re-used run-id)
    message = str(raised.value)
    assert "\n" not in message and "'run-a' is taken" in message
    assert message.endswith("pick a new run-id, or continue that run with resume=1")
    assert (first.path / "config.json").read_bytes() == before
    assert first.config().seed == 4
    # Another run id in the same run-dir is fine.
    second = RunRecord.create(_config(tmp_path, **{"run-id": "run-b"}))
    assert second.path != first.path
    assert second.config().run_id == "run-b"


def test_metrics_are_appended_in_order_with_nan_as_null(tmp_path: Path) -> None:
    record = RunRecord.create(_config(tmp_path))
    rows = [
        {"round": 1, "event": "fit", "loss": 0.5, "accuracy": np.float32(0.25)},
        {"round": 2, "event": "evaluate", "loss": float("nan"), "per_client": [1.0, float("inf"), 2]},
        {
            "round": 3,
            "event": "fit",
            "nested": {"a": -float("inf"), "b": np.int64(7)},
            "t": torch.tensor(1.5),
        },
    ]
    for row in rows:
        record.append_metrics(row)

    lines = (record.path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3
    assert "NaN" not in lines[1] and "Infinity" not in lines[1]
    assert "null" in lines[1]
    got = record.metrics()
    assert [r["round"] for r in got] == [1, 2, 3]
    assert got[0] == {"round": 1, "event": "fit", "loss": 0.5, "accuracy": 0.25}
    assert got[1] == {"round": 2, "event": "evaluate", "loss": None, "per_client": [1.0, None, 2]}
    assert got[2] == {"round": 3, "event": "fit", "nested": {"a": None, "b": 7}, "t": 1.5}
    assert type(got[2]["nested"]["b"]) is int

    # Appending more keeps the earlier lines; a reopened record reads the same rows.
    record.append_metrics({"round": 4})
    reopened = RunRecord(record.path)
    assert reopened.metrics() == [*got, {"round": 4}]


def test_split_round_trip(tmp_path: Path) -> None:
    config = _config(tmp_path)
    dataset = load_dataset("digits")
    split = make_split(dataset.y_train, len(dataset.y_test), config)
    record = RunRecord.create(config)
    path = record.write_split(split)
    assert path == record.path / "split.json"
    back = record.split()
    assert back.to_json() == split.to_json()
    np.testing.assert_array_equal(back.aux_ids, split.aux_ids)
    for a, b in zip(back.clients, split.clients, strict=True):
        np.testing.assert_array_equal(a.train_ids, b.train_ids)
        np.testing.assert_array_equal(a.holdout_ids, b.holdout_ids)
    assert _no_temp_files(record.path)


def test_checkpoints_round_trip_through_load_model(tmp_path: Path) -> None:
    config = _config(tmp_path)
    record = RunRecord.create(config)
    x = torch.from_numpy(np.array(load_dataset("digits").x_test[:20]))

    model = build(config)
    states, outputs = {}, {}
    for server_round in (1, 10, 2):  # written out of order
        with torch.no_grad():  # a distinct set of weights per round
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))
        record.save_checkpoint(server_round, model.state_dict())
        states[server_round] = {k: v.clone() for k, v in model.state_dict().items()}
        model.eval()
        with torch.no_grad():
            outputs[server_round] = model(x)

    assert list(record.checkpoints()) == [1, 2, 10]  # numeric order, not "1, 10, 2"
    assert (record.path / "checkpoints" / "round-10.pt").is_file()
    assert _no_temp_files(record.path)

    for server_round in (1, 2, 10):
        state = record.load_checkpoint(server_round)
        assert state.keys() == states[server_round].keys()
        assert all(torch.equal(state[k], states[server_round][k]) for k in state)
        loaded = record.load_model(server_round)
        loaded.eval()
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), outputs[server_round], rtol=0, atol=0)

    # Default: the last round (10), not the last one written or the lexically last file.
    last = record.load_checkpoint()
    assert all(torch.equal(last[k], states[10][k]) for k in last)
    with torch.no_grad():
        torch.testing.assert_close(record.load_model().eval()(x), outputs[10], rtol=0, atol=0)
    assert not torch.equal(outputs[1], outputs[10])


def test_missing_checkpoints_raise_file_not_found(tmp_path: Path) -> None:
    record = RunRecord.create(_config(tmp_path))
    with pytest.raises(FileNotFoundError, match="no checkpoints"):
        record.load_checkpoint()
    model = build(record.config())
    record.save_checkpoint(1, model.state_dict())
    record.save_checkpoint(3, model.state_dict())
    with pytest.raises(FileNotFoundError, match=r"round 2; have \[1, 3\]"):
        record.load_checkpoint(2)
    with pytest.raises(FileNotFoundError):
        record.load_model(4)


def test_saving_a_checkpoint_again_replaces_it(tmp_path: Path) -> None:
    record = RunRecord.create(_config(tmp_path))
    model = build(record.config())
    record.save_checkpoint(1, model.state_dict())
    zeroed = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}
    record.save_checkpoint(1, zeroed)
    assert all(not v.any() for v in record.load_checkpoint(1).values())
    assert list((record.path / "checkpoints").iterdir()) == [record.path / "checkpoints" / "round-1.pt"]


def test_a_failed_write_leaves_the_previous_file_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config(tmp_path)
    record = RunRecord.create(config)
    before = (record.path / "config.json").read_bytes()

    def broken_replace(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        record.write_json("config.json", {"dataset": "broken"})
    with pytest.raises(OSError, match="disk full"):
        record.save_checkpoint(1, build(config).state_dict())
    monkeypatch.undo()

    assert (record.path / "config.json").read_bytes() == before
    assert record.checkpoints() == {}
    assert sorted(p.name for p in record.path.rglob("*")) == ["checkpoints", "config.json"]


def test_run_dir_from_environment_when_config_has_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEDFORGET_RUNS", str(tmp_path / "env-runs"))
    config = RunConfig.from_mapping({"dataset": "digits", "run-id": "from-env"})
    record = RunRecord.create(config)
    assert record.path == (tmp_path / "env-runs" / "from-env").resolve()
    assert (record.path / "config.json").is_file()


def test_only_measured_unlearning_rounds_count_as_unlearning_rounds() -> None:
    # the rows a withdrawal leaves when a round changed nothing (server/unlearning.py)
    rows = [
        {"round": 1, "phase": "train"},
        {"round": 1, "phase": "withdrawal", "event": "request-received"},
        {"round": 2, "phase": "unlearn", "event": "unlearn-round-sent"},
        {"round": 2, "phase": "unlearn", "unlearn-round": 1, "fr": 0.0},
        {"round": 2, "phase": "unlearn", "event": "unlearning-stalled", "unlearn-round": 1},
        {"round": 2, "phase": "unlearn", "event": "unlearning-kept-round", "unlearn-round": 1},
        {"round": 2, "phase": "train", "fr": 0.5},
    ]
    assert [i for i, r in enumerate(rows) if is_unlearning_round(r)] == [3]


def test_every_rename_into_the_record_is_followed_by_an_fsync_of_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A power cut cannot be pulled here; what can be checked is that the folder holding each
    # renamed file is fsynced after the rename (the file's own fsync does not make its name durable).
    import stat

    events: list[tuple[str, object]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        info = os.fstat(fd)
        events.append(("fsync-dir" if stat.S_ISDIR(info.st_mode) else "fsync-file", info.st_ino))
        real_fsync(fd)

    def replace(src: str, dst: str) -> None:
        real_replace(src, dst)
        events.append(("replace", Path(dst).parent.stat().st_ino))

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    record = RunRecord.create(_config(tmp_path))
    state = build(record.config()).state_dict()
    record.save_resume_point(0, state, {})
    record.save_checkpoint(1, state)
    record.append_metrics({"round": 0})
    folders = {record.path.stat().st_ino, (record.path / "checkpoints").stat().st_ino}
    renames = [i for i, (kind, _) in enumerate(events) if kind == "replace"]
    assert len(renames) == 3  # config.json, resume.pt, checkpoints/round-1.pt
    for i in renames:
        folder = events[i][1]
        assert folder in folders and ("fsync-dir", folder) in events[i + 1 :], events
    # the new metrics.jsonl's name is made durable too
    assert events[-1] == ("fsync-dir", record.path.stat().st_ino)


def test_federasers_update_store_is_written_through_the_same_atomic_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import stat

    from server.update_store import update_store

    folders: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            folders.append(info.st_ino)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    store = update_store(tmp_path, every=1)
    global_state = {"w": np.zeros(3, dtype=np.float32)}
    store.save(1, global_state, {0: {"w": np.ones(3, dtype=np.float32)}}, {0: 5.0})
    assert [p.name for p in (tmp_path / "federaser").iterdir()] == ["round-00001.npz"]
    assert (tmp_path / "federaser").stat().st_ino in folders
    np.testing.assert_array_equal(store.load().updates[1][0]["w"], np.ones(3))
