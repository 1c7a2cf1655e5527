"""Resolving a run on the server: validated config, data, split, initial model and run record."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import flwr
import torch

from fedforget import data, models
from fedforget.client_data import split_for
from fedforget.config import RunConfig
from fedforget.data.base import Dataset
from fedforget.records import RunRecord, new_run_id
from fedforget.splits import Split, check_split


@dataclasses.dataclass(frozen=True)
class PreparedRun:
    """Everything the server loop needs; ``config`` is fully resolved (model, run id)."""

    config: RunConfig
    dataset: Dataset
    split: Split
    model: torch.nn.Module
    record: RunRecord


def resolve_config(run_config: Mapping[str, Any]) -> RunConfig:
    """Validate the Flower run config and resolve ``model=auto`` and an empty ``run-id``."""
    config = RunConfig.from_mapping(run_config)
    info = data.info(config.dataset, config.data_dir or None)
    changes: dict[str, Any] = {"model": models.resolve_model_name(config.model, info)}
    if not config.run_id:
        changes["run_id"] = new_run_id(config.dataset)
    return config.replace(**changes)


def prepare_run(run_config: Mapping[str, Any]) -> PreparedRun:
    """Load the data, make and check the split, build the model and create the run record."""
    config = resolve_config(run_config)
    dataset = data.load(config)
    split = split_for(config)
    check_split(split, dataset.num_train)
    model = models.build_model(config.model, dataset.info, seed=config.seed)
    record = RunRecord.create(config, environment={"flwr": flwr.__version__})
    record.write_split(split)
    return PreparedRun(config, dataset, split, model, record)
