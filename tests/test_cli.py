"""`fedforget withdraw` / `fedforget status` on bad stores and bad ids: one-line errors, nothing created."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from fedforget import sqlite_store
from fedforget.cli import main
from fedforget.client_data import ClientData
from fedforget.config import RunConfig
from fedforget.request_store import RequestStore

CONFIG = RunConfig.from_mapping({"num-clients": 3})


def _one_line_error(capsys: pytest.CaptureFixture[str], *words: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    for word in words:
        assert word in err, err
    return err


def _config_file(tmp_path: Path) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(CONFIG.to_dict()))
    return path


def _withdraw(store: Path, config: Path, *what: str) -> int:
    return main(["withdraw", "--store", str(store), "--partition-id", "0", "--config", str(config), *what])


def test_status_of_a_missing_store_refuses_and_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "typo" / "x.sqlite"
    assert main(["status", "--store", str(store)]) == 2
    _one_line_error(capsys, "no request store at", str(store))
    assert not (tmp_path / "typo").exists()


def test_withdraw_without_config_or_set_refuses_and_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "dev.sqlite"
    assert main(["withdraw", "--store", str(store), "--partition-id", "0", "--all"]) == 2
    _one_line_error(capsys, "--config or --set")
    assert not store.exists()


@pytest.mark.parametrize("command", ["status", "withdraw"])
def test_a_folder_as_store_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    folder = tmp_path / "dev.sqlite"
    folder.mkdir()
    args = ["--all"] if command == "withdraw" else []
    code = (
        _withdraw(folder, _config_file(tmp_path), *args)
        if command == "withdraw"
        else main(["status", "--store", str(folder)])
    )
    assert code == 2
    _one_line_error(capsys, "is a folder")


@pytest.mark.parametrize("command", ["status", "withdraw"])
def test_a_file_that_is_not_sqlite_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    store = tmp_path / "dev.sqlite"
    store.write_bytes(b"these are my notes, not a database\n" * 200)
    before = store.read_bytes()
    if command == "withdraw":
        code = _withdraw(store, _config_file(tmp_path), "--all")
    else:
        code = main(["status", "--store", str(store)])
    assert code == 2
    _one_line_error(capsys, "not a SQLite database")
    assert store.read_bytes() == before


def test_a_store_locked_longer_than_the_busy_timeout_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "dev.sqlite"
    RequestStore(store)
    monkeypatch.setattr(sqlite_store, "BUSY_TIMEOUT_S", 0.3)  # instead of 30 s
    holder = sqlite3.connect(store, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")  # another process writing and not letting go
        assert _withdraw(store, _config_file(tmp_path), "--all") == 2
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    _one_line_error(capsys, "locked for more than 0.3 s")
    assert RequestStore(store).all() == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write a read-only file")
def test_a_read_only_store_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "dev.sqlite"
    RequestStore(store)
    store.chmod(0o400)
    assert _withdraw(store, _config_file(tmp_path), "--all") == 2
    _one_line_error(capsys, "read-only")


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        ("1_0", "digits 0-9"),
        ("\u0661\u0666", "digits 0-9"),
        ("12,+3", "digits 0-9"),
        ("4,5x", "digits 0-9"),
        (",", "empty request"),
        (" , ", "empty request"),
    ],
)
def test_ids_must_be_ascii_digits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], ids: str, message: str
) -> None:
    """``int()`` reads ``1_0`` as 10 and Arabic-Indic ``١٦`` as 16: a withdrawal is forever, so refuse."""
    store = tmp_path / "dev.sqlite"
    assert _withdraw(store, _config_file(tmp_path), "--ids", ids) == 2
    _one_line_error(capsys, message)
    assert RequestStore(store).all() == []


def test_ascii_ids_are_stored(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    own = ClientData.for_partition(CONFIG, 0).train_ids[:2].tolist()
    store = tmp_path / "dev.sqlite"
    assert _withdraw(store, _config_file(tmp_path), "--ids", f"{own[0]}, {own[1]}") == 0
    (stored,) = RequestStore(store).all()
    np.testing.assert_array_equal(stored.ids, sorted(own))
