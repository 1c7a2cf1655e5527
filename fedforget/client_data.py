"""One client's view of the data: its training samples and its held-out (non-member) samples.

Works without any federation: ``ClientData.for_partition(config, 0)`` gives the same arrays a
Flower client with ``partition-id=0`` trains on. Data and split are cached per process, since a
simulated client answers many messages in one process.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from fedforget import data
from fedforget.config import RunConfig
from fedforget.splits import Split, make_split


@functools.lru_cache(maxsize=8)
def split_for(config: RunConfig) -> Split:
    """The run's split (deterministic in the config; cached)."""
    dataset = data.load(config)
    return make_split(dataset.y_train, len(dataset.y_test), _split_key(config))


def _split_key(config: RunConfig) -> RunConfig:
    """The config with the fields that do not affect the split normalised (better cache hits)."""
    return config.replace(num_rounds=1, run_id="", run_dir="", model="auto", local_epochs=1)


@dataclasses.dataclass(frozen=True, eq=False)
class ClientData:
    """Arrays of one client, indexed by global ids of the canonical train split."""

    partition_id: int
    train_ids: np.ndarray
    holdout_ids: np.ndarray
    x_train: np.ndarray
    y_train: np.ndarray
    x_holdout: np.ndarray
    y_holdout: np.ndarray

    @classmethod
    def for_partition(cls, config: RunConfig, partition_id: int) -> ClientData:
        if not 0 <= partition_id < config.num_clients:
            raise ValueError(f"partition-id {partition_id} outside [0, num-clients={config.num_clients})")
        dataset = data.load(config)
        part = split_for(config).client(partition_id)
        return cls(
            partition_id,
            part.train_ids,
            part.holdout_ids,
            dataset.x_train[part.train_ids],
            dataset.y_train[part.train_ids],
            dataset.x_train[part.holdout_ids],
            dataset.y_train[part.holdout_ids],
        )
