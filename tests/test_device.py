"""The device's durable request store and the `fedforget withdraw` / `fedforget status` commands."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fedforget.cli import main
from fedforget.client_data import ClientData
from fedforget.config import RunConfig
from fedforget.request_store import RequestError, RequestStore

CONFIG = RunConfig.from_mapping({"num-clients": 3})


def test_store_persists_requests_and_tombstones(tmp_path: Path) -> None:
    owned = np.arange(100, 200)
    store = RequestStore(tmp_path / "dev.sqlite")
    stored = store.add("samples", [150, 120, 120], owned_ids=owned, request_id="a")
    assert stored.ids.tolist() == [120, 150] and stored.state == "pending"
    again = RequestStore(tmp_path / "dev.sqlite")  # a restart
    assert again.get("a").ids.tolist() == [120, 150]
    assert again.tombstoned().tolist() == [120, 150]
    done = again.complete("a", {"fr": 1.0})
    assert done.state == "completed" and done.receipt == {"fr": 1.0}


@pytest.mark.parametrize(
    ("ids", "request_id", "message"),
    [
        ([], "x", "empty request"),
        ([5, 150], "x", "does not hold"),
        ([150], "b", "already withdrawn"),
        ([121], "a", "duplicate request id"),
    ],
)
def test_store_gives_clear_answers(tmp_path: Path, ids: list[int], request_id: str, message: str) -> None:
    store = RequestStore(tmp_path / "dev.sqlite")
    store.add("samples", [150], owned_ids=np.arange(100, 200), request_id="a")
    with pytest.raises(RequestError, match=message):
        store.add("samples", ids, owned_ids=np.arange(100, 200), request_id=request_id)
    assert store.tombstoned().tolist() == [150]  # nothing half-written


def test_identical_request_is_idempotent(tmp_path: Path) -> None:
    store = RequestStore(tmp_path / "dev.sqlite")
    first = store.add("samples", [150], owned_ids=np.arange(100, 200), request_id="a")
    second = store.add("samples", [150], owned_ids=np.arange(100, 200), request_id="a")
    assert first.request_id == second.request_id and len(store.all()) == 1


def test_cli_withdraw_and_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps({**CONFIG.to_dict(), "environment": {"python": "3.11"}}))
    store = tmp_path / "dev.sqlite"
    part = ClientData.for_partition(CONFIG, 1)
    base = ["withdraw", "--store", str(store), "--partition-id", "1", "--config", str(config_path)]
    assert main([*base, "--ids", ",".join(map(str, part.train_ids[:3]))]) == 0
    request_id = capsys.readouterr().out.strip()
    assert RequestStore(store).get(request_id).ids.tolist() == part.train_ids[:3].tolist()
    assert main([*base, "--class", "4"]) == 0
    capsys.readouterr()
    class_ids = RequestStore(store).all()[-1].ids
    assert set(class_ids.tolist()) == set(part.train_ids[part.y_train == 4].tolist()) - set(
        part.train_ids[:3].tolist()
    )
    # Someone else's id, and the same ids again, get clear errors and change nothing.
    other = ClientData.for_partition(CONFIG, 0).train_ids[0]
    assert main([*base, "--ids", str(other)]) == 2
    assert "does not hold" in capsys.readouterr().err
    assert main([*base, "--ids", str(part.train_ids[0])]) == 2
    assert "already withdrawn" in capsys.readouterr().err
    assert main([*base, "--ids", "1,x"]) == 2
    assert "comma-separated integers" in capsys.readouterr().err
    assert main(["status", "--store", str(store)]) == 0
    listing = capsys.readouterr().out
    assert request_id in listing and "pending" in listing and listing.count("\n") == 3


def test_cli_is_installed_as_a_command(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "fedforget"
    RequestStore(tmp_path / "s.sqlite")  # status refuses a store that does not exist (tests/test_cli.py)
    result = subprocess.run(
        [str(exe), "status", "--store", str(tmp_path / "s.sqlite")], capture_output=True, text=True
    )
    assert result.returncode == 0 and "no withdrawal requests" in result.stdout
