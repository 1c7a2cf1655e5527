"""Tests for the run configuration (fedforget.config)."""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fedforget.config import PARTITIONINGS, ConfigError, RunConfig

FIELDS = {f.name: f for f in dataclasses.fields(RunConfig)}
KEBAB_KEYS = [name.replace("_", "-") for name in FIELDS]
TYPES = {name: {"int": int, "float": float, "str": str}[str(f.type)] for name, f in FIELDS.items()}


def _error(mapping: dict[str, Any] | None = None, **overrides: Any) -> str:
    with pytest.raises(ConfigError) as info:
        RunConfig.from_mapping(mapping, **overrides)
    return str(info.value)


# ------------------------------------------------------------------------------------ known answers
def test_defaults_match_the_flower_app_config_in_pyproject() -> None:
    pyproject = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())
    app_config = pyproject["tool"]["flwr"]["app"]["config"]
    assert app_config == RunConfig().to_dict()
    assert RunConfig.from_mapping(app_config) == RunConfig()


def test_to_dict_uses_kebab_case_keys_for_every_field() -> None:
    config = RunConfig(num_clients=7, aux_fraction=0.3, run_id="abc")
    doc = config.to_dict()
    assert list(doc) == KEBAB_KEYS
    assert doc["num-clients"] == 7
    assert doc["aux-fraction"] == 0.3
    assert doc["run-id"] == "abc"
    assert all("_" not in key for key in doc)


def test_kebab_and_snake_keys_are_both_accepted() -> None:
    kebab = RunConfig.from_mapping({"num-clients": 8, "learning-rate": 0.01, "clients-per-round": 3})
    snake = RunConfig.from_mapping({"num_clients": 8, "learning_rate": 0.01, "clients_per_round": 3})
    assert kebab == snake
    assert (kebab.num_clients, kebab.learning_rate, kebab.clients_per_round) == (8, 0.01, 3)
    # Surrounding whitespace in a key is ignored.
    assert RunConfig.from_mapping({" seed ": 4}).seed == 4


def test_keyword_overrides_win_over_the_mapping() -> None:
    config = RunConfig.from_mapping({"num-clients": 4, "seed": 1}, num_clients=9)
    assert config.num_clients == 9
    assert config.seed == 1
    assert RunConfig.from_mapping(None) == RunConfig()
    assert RunConfig.from_mapping(seed=3).seed == 3


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("num-clients", "12", 12),
        ("num-clients", 12.0, 12),
        ("seed", " 7 ", 7),
        ("alpha", "0.25", 0.25),
        ("alpha", 2, 2.0),
        ("learning-rate", "1e-3", 0.001),
        ("dataset", "csv:/tmp/x.csv", "csv:/tmp/x.csv"),
    ],
)
def test_values_are_coerced_to_the_field_type(key: str, value: Any, expected: Any) -> None:
    config = RunConfig.from_mapping({key: value})
    got = getattr(config, key.replace("-", "_"))
    assert got == expected
    assert type(got) is type(expected)


@pytest.mark.parametrize(
    ("key", "value", "expected_words"),
    [
        ("num-clients", "many", ["num-clients", "'many'", "an integer"]),
        ("num-clients", 2.5, ["num-clients", "2.5", "an integer"]),
        ("num-clients", float("inf"), ["num-clients", "inf", "an integer"]),
        ("seed", None, ["seed", "None", "an integer"]),
        ("batch-size", True, ["batch-size", "True", "a number"]),
        ("alpha", "high", ["alpha", "'high'", "a number"]),
        ("alpha", [1.0], ["alpha", "[1.0]", "a number"]),
        pytest.param("alpha", 10**400, ["alpha", "a number"], id="alpha-huge-int"),
        ("dataset", 5, ["dataset", "5", "a string"]),
        ("run-id", None, ["run-id", "None", "a string"]),
    ],
)
def test_values_of_the_wrong_type_are_rejected(key: str, value: Any, expected_words: list[str]) -> None:
    message = _error({key: value})
    for word in expected_words:
        assert word in message, (word, message)


def test_unknown_key_suggests_the_closest_known_key() -> None:
    message = _error({"num-client": 3})
    assert "Unknown config key 'num-client'" in message
    assert "Did you mean 'num-clients'?" in message
    # snake_case spellings are reported (and matched) in kebab-case
    message = _error({"learning_rat": 0.1})
    assert "'learning-rat'" in message
    assert "Did you mean 'learning-rate'?" in message


def test_unknown_key_without_a_close_match_has_no_hint() -> None:
    message = _error({"zzzzzz": 1})
    assert "'zzzzzz'" in message
    assert "Did you mean" not in message


@pytest.mark.parametrize(
    ("changes", "key", "allowed"),
    [
        ({"dataset": "  "}, "dataset", "a dataset name"),
        ({"num-clients": 0}, "num-clients", ">= 1"),
        ({"num-clients": -3}, "num-clients", ">= 1"),
        ({"partitioning": "random"}, "partitioning", "one of iid, dirichlet, pathological"),
        ({"partitioning": "IID"}, "partitioning", "one of iid, dirichlet, pathological"),
        ({"alpha": 0}, "alpha", "> 0"),
        ({"alpha": -0.5}, "alpha", "> 0"),
        ({"alpha": float("nan")}, "alpha", "> 0"),
        ({"alpha": float("inf")}, "alpha", "finite"),
        ({"classes-per-client": 0}, "classes-per-client", ">= 1"),
        ({"aux-fraction": 1.0}, "aux-fraction", "[0, 1)"),
        ({"aux-fraction": -0.1}, "aux-fraction", "[0, 1)"),
        ({"holdout-fraction": 1}, "holdout-fraction", "[0, 1)"),
        ({"holdout-fraction": -0.01}, "holdout-fraction", "[0, 1)"),
        ({"max-train-samples": -1}, "max-train-samples", ">= 0"),
        ({"num-rounds": 0}, "num-rounds", ">= 1"),
        ({"local-epochs": 0}, "local-epochs", ">= 1"),
        ({"learning-rate": 0}, "learning-rate", "> 0"),
        ({"learning-rate": float("inf")}, "learning-rate", "finite"),
        ({"momentum": 1}, "momentum", "[0, 1)"),
        ({"momentum": -0.1}, "momentum", "[0, 1)"),
        ({"weight-decay": -1e-4}, "weight-decay", ">= 0"),
        ({"weight-decay": float("inf")}, "weight-decay", "finite"),
        ({"batch-size": 0}, "batch-size", ">= 1"),
        ({"num-clients": 5, "clients-per-round": 6}, "clients-per-round", "num-clients (5)"),
        ({"clients-per-round": -1}, "clients-per-round", "between 0"),
        ({"seed": -1}, "seed", ">= 0"),
        ({"checkpoint-every": -2}, "checkpoint-every", ">= 0"),
        ({"run-dir": "runs"}, "run-dir", "an absolute path"),
        ({"run-dir": "./out/runs"}, "run-dir", "an absolute path"),
        ({"run-id": "a/b"}, "run-id", "a plain folder name"),
        ({"run-id": ".."}, "run-id", "a plain folder name"),
        ({"run-id": "."}, "run-id", "a plain folder name"),
        (
            {"unlearn-method": "sisa"},
            "unlearn-method",
            "forsaken, gradient-ascent, pga, finetune, retrain, federaser",
        ),
        ({"unlearn-method": "gradient_ascent"}, "unlearn-method", "one of forsaken"),
        ({"unlearn-method": "amnesiac"}, "unlearn-method", "sisa and amnesiac run only"),
        ({"federaser-every": 0}, "federaser-every", ">= 1"),
        ({"ascent-steps": 0}, "ascent-steps", ">= 1"),
    ],
)
def test_invalid_values_name_the_key_the_value_and_what_is_allowed(
    changes: dict[str, Any], key: str, allowed: str
) -> None:
    message = _error(changes)
    assert f"Invalid value for '{key}'" in message
    assert repr(changes[key]) in message  # the offending value
    assert allowed in message


@pytest.mark.parametrize(
    "changes",
    [
        {"num-clients": 1, "clients-per-round": 1},
        {"clients-per-round": 5},
        {"aux-fraction": 0, "holdout-fraction": 0},
        {"aux-fraction": 0.99, "momentum": 0.0},
        {"alpha": 1e-6, "max-train-samples": 0, "seed": 0},
        {"run-dir": "/tmp/fedforget-runs", "run-id": "my-run.1"},
        {"partitioning": "pathological", "classes-per-client": 3},
        {"partitioning": "dirichlet"},
        *(
            {"unlearn-method": m}
            for m in ("forsaken", "gradient-ascent", "pga", "finetune", "retrain", "federaser")
        ),
        {"ascent-steps": 1, "federaser-every": 1},
    ],
)
def test_boundary_values_are_accepted(changes: dict[str, Any]) -> None:
    config = RunConfig.from_mapping(changes)
    for key, value in changes.items():
        assert getattr(config, key.replace("-", "_")) == value


def test_effective_clients_per_round() -> None:
    assert RunConfig(num_clients=6, clients_per_round=0).effective_clients_per_round == 6
    assert RunConfig(num_clients=6, clients_per_round=2).effective_clients_per_round == 2


def test_replace_validates_and_leaves_the_original_alone() -> None:
    base = RunConfig.from_mapping({"num-clients": 4})
    changed = base.replace(num_clients=10, clients_per_round=10)
    assert (changed.num_clients, changed.clients_per_round) == (10, 10)
    assert base.num_clients == 4
    assert changed.replace(num_clients=4, clients_per_round=0) == base
    with pytest.raises(ConfigError, match="'num-clients'"):
        base.replace(num_clients=0)
    with pytest.raises(ConfigError, match="'clients-per-round'"):
        base.replace(clients_per_round=5)  # > num-clients (4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        base.num_clients = 3  # type: ignore[misc]


def test_to_dict_round_trips_through_json() -> None:
    config = RunConfig.from_mapping(
        {"dataset": "digits", "num-clients": 3, "alpha": 0.05, "run-dir": "/abs/dir", "seed": 11}
    )
    assert RunConfig.from_mapping(json.loads(json.dumps(config.to_dict()))) == config


# ------------------------------------------------------------------------------------ property
_numbers = st.one_of(
    st.integers(),
    st.integers(min_value=-(10**500), max_value=10**500),
    st.floats(),
    st.floats(min_value=0, max_value=1),
    st.booleans(),
    st.decimals(),
    st.fractions(),
)
_values = st.one_of(
    st.none(),
    _numbers,
    _numbers.map(str),
    st.text(max_size=12),
    st.sampled_from(PARTITIONINGS + ("/abs/path", "rel/path", "a/b", ".", "..", "digits", " ")),
    st.binary(max_size=4),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=1),
)
_keys = st.sampled_from(KEBAB_KEYS + list(FIELDS))


def _plausible(key: str) -> st.SearchStrategy[Any]:
    """Values of the right kind for ``key`` (so that a good share of the mappings is valid)."""
    name = key.replace("-", "_")
    if name == "partitioning":
        return st.sampled_from(PARTITIONINGS)
    if name == "run_dir":
        return st.sampled_from(["", "/tmp/runs", "/abs/x"])
    if name == "run_id":
        return st.text(alphabet="abc-_.0", max_size=6)
    if TYPES[name] is str:
        return st.sampled_from(["digits", "mnist", "csv:/x.csv"])
    if TYPES[name] is int:
        return st.one_of(st.integers(0, 12), st.integers(0, 12).map(str))
    return st.one_of(st.floats(0, 0.99), st.floats(0, 0.99).map(str), st.integers(0, 1))


_pairs = st.one_of(
    st.tuples(_keys, _values),
    _keys.flatmap(lambda key: _plausible(key).map(lambda value: (key, value))),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_pairs, max_size=len(FIELDS)).map(dict))
@example({"alpha": 10**400})
@example({"learning-rate": float("inf")})
@example({"weight_decay": "1e400"})
@example({"num-clients": "1" * 5000})
@example({"seed": 1e300, "run-id": ""})
def test_from_mapping_returns_a_valid_round_tripping_config_or_raises_config_error(
    mapping: dict[str, Any],
) -> None:
    try:
        config = RunConfig.from_mapping(mapping)
    except ConfigError as error:
        assert str(error)
        return
    config.validate()
    for name, kind in TYPES.items():
        assert type(getattr(config, name)) is kind, name
    for name in ("alpha", "learning_rate", "weight_decay", "momentum", "aux_fraction"):
        assert math.isfinite(getattr(config, name)), name
    # Values given with the right type come through unchanged (the last spelling of a key wins).
    given_values = {key.replace("-", "_"): value for key, value in mapping.items()}
    for name, value in given_values.items():
        if type(value) is TYPES[name]:
            assert getattr(config, name) == value, name
    # Round trip through to_dict, in memory and through strict JSON (what config.json stores).
    doc = config.to_dict()
    assert RunConfig.from_mapping(doc) == config
    assert RunConfig.from_mapping(json.loads(json.dumps(doc, allow_nan=False))) == config
