"""Fuzzing the parsers that take outside input (hypothesis, bounded so the file runs in seconds).

Contract under test, for any input: the parser returns a valid object, or raises its documented
error type with a message. Never another exception.

* ``fedforget.withdrawals.parse_schedule`` -> ``WithdrawalError``;
* ``RunConfig.from_mapping`` (the Flower run config) -> ``ConfigError``: fuzzed in
  ``tests/test_config.py`` (``test_from_mapping_returns_a_valid_round_tripping_config_...``);
* ``simulations.run.parse_assignments`` (``--set key=value``) -> ``ConfigError``;
* ``fedforget withdraw --ids/--class`` -> exit 2 with ``error: ...`` (argparse's own usage errors
  exit 2 too), or exit 0 with a stored request.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fedforget.client_data import ClientData
from fedforget.config import ConfigError, RunConfig
from fedforget.withdrawals import GRAINS, WithdrawalError, parse_schedule, resolve_ids
from simulations.run import parse_assignments

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Text that looks like schedules often enough to reach the deep branches.
_atoms = st.sampled_from(
    ["1", "0", "-1", "3", "10", "1e3", "nan", "inf", "-inf", "0.5", "1.5", "", " ", "x", "+2", "1_0", "٣"]
)
_grain = st.sampled_from([*GRAINS, "Samples", "CLASS", "clients", ""])
_entry = st.builds(
    lambda r, c, g, a, n: ":".join([r, c, g, a][:n]),
    _atoms,
    _atoms,
    _grain,
    _atoms,
    st.integers(1, 5),
)
_schedules = st.one_of(
    st.lists(_entry, max_size=4).map(";".join),
    st.text(alphabet=st.sampled_from(list("0123456789:;.,-+ eainfsmplclt")), max_size=40),
    st.text(max_size=30),
)


@FAST
@given(_schedules)
@example("1:0:samples:nan")  # found by this test: NaN passed every range check, then crashed resolve_ids
@example("2:1:samples:NaN; 3:0:class:7")
def test_schedule_parser_returns_requests_or_a_withdrawal_error(text: str) -> None:
    try:
        requests = parse_schedule(text)
    except WithdrawalError as error:
        assert str(error)
        return
    for r in requests:
        assert r.round >= 1 and r.client >= 0 and r.grain in GRAINS
        assert r.arg is None or math.isfinite(r.arg)
        # A parsed request always resolves (or says why not) on a client's ids.
        try:
            ids = resolve_ids(r, np.arange(100, 140), np.arange(40) % 4, seed=0)
        except WithdrawalError as error:
            assert str(error)
        else:
            assert ids.size and set(ids.tolist()) <= set(range(100, 140))


@FAST
@given(st.lists(st.text(max_size=25), max_size=4))
def test_set_assignments_parse_or_raise_a_config_error(items: list[str]) -> None:
    try:
        parsed = parse_assignments(items)
    except ConfigError as error:
        assert str(error)
        return
    assert all(isinstance(k, str) and k for k in parsed)


CONFIG = RunConfig.from_mapping({"num-clients": 3, "max-train-samples": 300})


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import json

    path = tmp_path_factory.mktemp("fuzz") / "config.json"
    path.write_text(json.dumps(CONFIG.to_dict()))
    return path


_id_text = st.one_of(
    st.lists(st.integers(-5, 2**64), max_size=5).map(lambda v: ",".join(map(str, v))),
    st.text(alphabet=st.sampled_from(list("0123456789, -+_xe.")), max_size=20),
    st.text(max_size=15),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ids=_id_text, label=st.one_of(st.integers(-3, 12), st.text(max_size=4)))
def test_withdraw_cli_arguments_are_accepted_or_refused_cleanly(
    ids: str, label: int | str, config_file: Path, tmp_path_factory: pytest.TempPathFactory, capsys
) -> None:  # noqa: ANN001
    from fedforget.cli import main
    from fedforget.request_store import RequestStore

    store = tmp_path_factory.mktemp("store") / "dev.sqlite"
    base = ["withdraw", "--store", str(store), "--partition-id", "1", "--config", str(config_file)]
    owned = set(ClientData.for_partition(CONFIG, 1).train_ids.tolist())
    for extra in (["--ids", ids], ["--class", str(label)]):
        try:
            code = main([*base, *extra])
        except SystemExit as exit_:  # argparse refusing e.g. a non-integer --class: usage + exit 2
            assert exit_.code == 2
            assert "error:" in capsys.readouterr().err
            continue
        err = capsys.readouterr().err
        assert code in (0, 2)
        if code == 2:
            assert err.startswith("error: ") and len(err) > len("error: \n")
    # Whatever was accepted is this device's own data, and nothing else.
    assert set(RequestStore(store).tombstoned().tolist()) <= owned
