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


SPLIT_FIELDS = (
    "dataset",
    "data_dir",
    "num_clients",
    "partitioning",
    "alpha",
    "classes_per_client",
    "aux_fraction",
    "holdout_fraction",
    "max_train_samples",
    "seed",
)


def _split_key(config: RunConfig) -> RunConfig:
    """A config holding only the fields the split depends on (better cache hits)."""
    return RunConfig(**{name: getattr(config, name) for name in SPLIT_FIELDS})


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

    def without(self, ids: np.ndarray) -> ClientData:
        """This client's data with the training samples ``ids`` removed (tombstoned)."""
        keep = ~np.isin(self.train_ids, ids)
        return dataclasses.replace(
            self, train_ids=self.train_ids[keep], x_train=self.x_train[keep], y_train=self.y_train[keep]
        )

    def subset(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(ids, x, y)`` of some of this client's *training* samples; other ids are an error."""
        ids = np.asarray(ids, dtype=np.int64)
        position = np.searchsorted(self.train_ids, ids)
        valid = (position < len(self.train_ids)) & (
            self.train_ids[np.minimum(position, len(self.train_ids) - 1)] == ids
        )
        if not valid.all():
            raise ValueError(f"client {self.partition_id} does not hold ids {ids[~valid][:5].tolist()}")
        return ids, self.x_train[position], self.y_train[position]
