"""Resolving a run on the server: validated config, data, split, initial model, run record, ledger.

A fresh run (``resume = 0``) creates its record; a run-id whose record exists is an error. A resumed
run (``resume = 1`` and the ``run-id`` of an existing record) reopens that record: its stored config
must equal the new one except for ``resume`` itself, and the model, the last completed round and the
unlearnings already applied come from the record's ``resume.pt`` (:class:`ResumePoint`).

With ``client-data = own`` the server loads only its own ``dataset`` (auxiliary data for the oracle
and test data), never any client's: the split has no client parts (:func:`fedforget.client_data.split_for`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import flwr
import torch
from flwr.serverapp import Grid

from fedforget import data, models
from fedforget.config import ConfigError, RunConfig
from fedforget.data.base import Dataset
from fedforget.records import RunRecord, default_runs_root, new_run_id
from fedforget.splits import Split, check_run_plan, check_split
from server.ledger import Key, Ledger


@dataclasses.dataclass(frozen=True)
class ResumePoint:
    """Where a resumed run continues: after ``round``, from ``state``, with ``applied`` unlearnings."""

    round: int
    state: dict[str, torch.Tensor]
    applied: dict[Key, dict[str, Any]]


@dataclasses.dataclass(frozen=True)
class PreparedRun:
    """Everything the server loop needs; ``config`` is fully resolved (model, run id)."""

    config: RunConfig
    dataset: Dataset
    split: Split
    model: torch.nn.Module
    record: RunRecord
    ledger: Ledger
    resume: ResumePoint | None = None


def resolve_config(run_config: Mapping[str, Any]) -> RunConfig:
    """Validate the Flower run config and resolve ``model=auto`` and an empty ``run-id``."""
    config = RunConfig.from_mapping(run_config)
    info = data.info(config.dataset, config.data_dir or None)
    changes: dict[str, Any] = {"model": models.resolve_model_name(config.model, info)}
    if not config.run_id:
        changes["run_id"] = new_run_id(config.dataset)
    return config.replace(**changes)


SIMULATION_NODE_WAIT_S = 15.0
"""How long a simulation's ServerApp waits for its SuperNodes to be registered (they come at once)."""


def check_federation_size(grid: Grid, config: RunConfig) -> None:
    """In a simulation, fail at once unless it has exactly ``num-clients`` SuperNodes.

    A simulation registers all its SuperNodes when it starts and never gains more, so FedAvg's
    "Waiting for nodes to connect: 2 connected (minimum required: 5)" would wait forever (``flwr run
    . --stream`` on Flower's default local federation has 2 SuperNodes; the app's default is 5
    clients); with more SuperNodes than clients, the extra ones fail every message. The error says
    the exact command for either fix. In a deployment SuperNodes join over time: nothing is checked.
    """
    from flwr.superlink.grid import InMemoryGrid  # the Grid of Flower's simulation runtime

    if not isinstance(grid, InMemoryGrid):
        return
    deadline = time.monotonic() + SIMULATION_NODE_WAIT_S
    nodes = len(list(grid.get_node_ids()))
    while nodes == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
        nodes = len(list(grid.get_node_ids()))
    if nodes != config.num_clients:
        raise ConfigError(
            f"this simulation has {nodes} SuperNodes but the run config has num-clients={config.num_clients} "
            f"(one SuperNode per client). Give it {config.num_clients}: flwr run . --stream "
            f'--federation-config "num-supernodes={config.num_clients}"; or use {nodes} clients: '
            f'flwr run . --stream --run-config "num-clients={nodes}"'
        )


def ledger_path(config: RunConfig) -> Path:
    """``ledger`` from the run config, else ``<run-dir>/ledger.sqlite`` (shared by the runs there)."""
    if config.ledger:
        return Path(config.ledger)
    root = Path(config.run_dir) if config.run_dir else default_runs_root()
    return root / "ledger.sqlite"


def prepare_run(run_config: Mapping[str, Any]) -> PreparedRun:
    """Load the data, make and check the split, build the model, and create (or reopen) the record."""
    config = resolve_config(run_config)
    dataset = data.load(config)
    if config.client_data == "own":
        _check_class_indices(config, dataset)
    split = check_run_plan(config)  # the split, and the withdrawal schedule checked against it
    check_split(split, dataset.num_train)
    model = models.build_model(config.model, dataset.info, seed=config.seed)
    ledger = Ledger(ledger_path(config), config.run_id)
    if config.resume:
        record = _reopen(config, split)
        completed, state, applied = record.load_resume_point()
        model.load_state_dict(state)
        return PreparedRun(
            config, dataset, split, model, record, ledger, ResumePoint(completed, state, applied)
        )
    if ledger.entries():
        raise ConfigError(
            f"the ledger {ledger.path} already holds requests of run {config.run_id!r}; "
            "continue that run with resume=1 or choose another run-id"
        )
    record = RunRecord.create(config, environment={"flwr": flwr.__version__})
    record.write_split(split)
    return PreparedRun(config, dataset, split, model, record, ledger)


def _check_class_indices(config: RunConfig, dataset: Dataset) -> None:
    """With ``client-data = own`` devices label their files with class indices, so the server's own
    file must too, and hold every class: its labels must be exactly ``0 .. K-1``."""
    if dataset.classes is None:  # a registry dataset: labels are class indices already
        return
    expected = tuple(float(k) for k in range(dataset.num_classes))
    try:
        found = tuple(float(c) for c in dataset.classes)
    except (TypeError, ValueError):
        found = ()
    if found != expected:
        shown = ", ".join(repr(c) for c in dataset.classes[:5])
        raise ConfigError(
            f"client-data=own: the server's dataset {config.dataset!r} must label its samples with the "
            f"class indices 0..K-1 and hold every class (devices use the same indices); it holds {shown}"
        )


def _reopen(config: RunConfig, split: Split) -> RunRecord:
    record = RunRecord.location(config)
    if not (record.path / "config.json").exists():
        raise ConfigError(f"resume=1 but there is no run record {record.path} to continue")
    stored = record.config().to_dict()
    new = config.to_dict()
    changed = sorted(k for k in new if k != "resume" and stored.get(k) != new[k])
    if changed:
        raise ConfigError(
            f"resume=1 must use the run's own config; these keys differ from {record.path / 'config.json'}: "
            + ", ".join(f"{k} ({stored.get(k)!r} -> {new[k]!r})" for k in changed)
        )
    if record.split().to_json() != split.to_json():
        raise ConfigError(f"the split recomputed from the config differs from {record.path / 'split.json'}")
    return record
