"""Splits for privacy research: server auxiliary data, client data, client held-out data, test data.

From the canonical train split (global ids ``0 .. N-1``):

1. ``pool``: all global ids, or a seeded random subset of ``max-train-samples`` of them;
2. ``aux``: a seeded ``aux-fraction`` of the pool, held by the server for shadow models and
   disjoint from every client;
3. the rest is shuffled (seeded) and partitioned over ``num-clients`` clients with a
   flwr-datasets partitioner (``iid``: :class:`IidPartitioner`, ``dirichlet``:
   :class:`DirichletPartitioner` over the labels with concentration ``alpha``,
   ``pathological``: :class:`PathologicalPartitioner` with ``classes-per-client`` classes each);
4. each client's part is split (seeded) into ``train`` ids and a ``holdout-fraction`` of
   ``holdout`` ids the client never trains on: its non-member reference data.

The test split (all test ids) is kept for utility. The same config always gives the same split,
so a client can recompute its own part from the run config alone.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from fedforget.config import RunConfig

# Offsets that decorrelate the seeded streams of the split's stages.
_POOL, _AUX, _SHUFFLE, _PARTITION, _HOLDOUT = 11, 23, 37, 41, 53


class SplitError(ValueError):
    """A split that cannot be made from the config (e.g. a client would get no data)."""


@dataclasses.dataclass(frozen=True, eq=False)
class ClientSplit:
    """One client's global ids: what it trains on and what it holds out."""

    train_ids: np.ndarray
    holdout_ids: np.ndarray

    @property
    def all_ids(self) -> np.ndarray:
        return np.sort(np.concatenate([self.train_ids, self.holdout_ids]))


@dataclasses.dataclass(frozen=True, eq=False)
class Split:
    """The full split of a run; every array holds sorted int64 global ids."""

    aux_ids: np.ndarray
    clients: tuple[ClientSplit, ...]
    test_ids: np.ndarray
    meta: dict[str, Any]

    @property
    def num_clients(self) -> int:
        return len(self.clients)

    def client(self, partition_id: int) -> ClientSplit:
        if not 0 <= partition_id < len(self.clients):
            raise SplitError(f"partition-id {partition_id} outside [0, {len(self.clients)})")
        return self.clients[partition_id]

    def to_json(self) -> dict[str, Any]:
        """The ``split.json`` document (see docs/run-record.md)."""
        return {
            **self.meta,
            "aux-ids": self.aux_ids.tolist(),
            "test-ids": self.test_ids.tolist(),
            "clients": [
                {
                    "partition-id": i,
                    "train-ids": c.train_ids.tolist(),
                    "holdout-ids": c.holdout_ids.tolist(),
                }
                for i, c in enumerate(self.clients)
            ],
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Split:
        ids = lambda values: np.asarray(values, dtype=np.int64)  # noqa: E731
        meta = {k: v for k, v in doc.items() if k not in ("aux-ids", "test-ids", "clients")}
        clients = tuple(ClientSplit(ids(c["train-ids"]), ids(c["holdout-ids"])) for c in doc["clients"])
        return cls(ids(doc["aux-ids"]), clients, ids(doc["test-ids"]), meta)

    def dumps(self) -> str:
        return json.dumps(self.to_json())


def make_split(y_train: np.ndarray, num_test: int, config: RunConfig) -> Split:
    """Split the canonical train ids for ``config`` (deterministic in ``config.seed``)."""
    y_train = np.asarray(y_train)
    n = len(y_train)
    if n == 0:
        raise SplitError("the dataset has no training samples")
    seed = config.seed
    pool = np.arange(n, dtype=np.int64)
    if config.max_train_samples and config.max_train_samples < n:
        rng = np.random.default_rng([seed, _POOL])
        pool = np.sort(rng.choice(pool, size=config.max_train_samples, replace=False))

    rng = np.random.default_rng([seed, _AUX])
    shuffled = rng.permutation(pool)
    num_aux = int(round(config.aux_fraction * len(pool)))
    aux = np.sort(shuffled[:num_aux])
    rest = np.random.default_rng([seed, _SHUFFLE]).permutation(shuffled[num_aux:])
    if len(rest) < config.num_clients:
        raise SplitError(
            f"only {len(rest)} samples remain for {config.num_clients} clients after the server's "
            f"auxiliary share; lower num-clients or aux-fraction, or raise max-train-samples"
        )

    parts = _partition(rest, y_train[rest], config)
    clients = []
    for pid, part in enumerate(parts):
        if len(part) == 0:
            raise SplitError(
                f"client {pid} received no samples with partitioning={config.partitioning!r}; "
                "lower num-clients, raise alpha, or use more data"
            )
        rng = np.random.default_rng([seed, _HOLDOUT, pid])
        order = rng.permutation(part)
        num_holdout = int(round(config.holdout_fraction * len(part)))
        if num_holdout >= len(part):
            num_holdout = len(part) - 1
        clients.append(ClientSplit(np.sort(order[num_holdout:]), np.sort(order[:num_holdout])))

    meta = {
        "dataset": config.dataset,
        "seed": seed,
        "partitioning": config.partitioning,
        "alpha": config.alpha if config.partitioning == "dirichlet" else None,
        "classes-per-client": (config.classes_per_client if config.partitioning == "pathological" else None),
        "aux-fraction": config.aux_fraction,
        "holdout-fraction": config.holdout_fraction,
        "num-train-total": n,
        "num-pool": len(pool),
        # Pathological partitioning may leave whole classes to no client: those ids are unused.
        "unassigned-ids": np.setdiff1d(rest, np.concatenate(parts)).tolist(),
    }
    return Split(aux, tuple(clients), np.arange(num_test, dtype=np.int64), meta)


def _partition(ids: np.ndarray, labels: np.ndarray, config: RunConfig) -> list[np.ndarray]:
    """Partition ``ids`` over the clients with the flwr-datasets partitioner the config names."""
    from datasets import Dataset as HFDataset
    from flwr_datasets.partitioner import DirichletPartitioner, IidPartitioner, PathologicalPartitioner

    k = config.num_clients
    if config.partitioning == "iid":
        partitioner: Any = IidPartitioner(num_partitions=k)
    elif config.partitioning == "dirichlet":
        partitioner = DirichletPartitioner(
            num_partitions=k,
            partition_by="label",
            alpha=config.alpha,
            min_partition_size=0,
            self_balancing=False,
            shuffle=True,
            seed=config.seed,
        )
    else:
        num_classes = len(np.unique(labels))
        if config.classes_per_client > num_classes:
            raise SplitError(
                f"classes-per-client={config.classes_per_client} but the data has only {num_classes} classes"
            )
        partitioner = PathologicalPartitioner(
            num_partitions=k,
            partition_by="label",
            num_classes_per_partition=config.classes_per_client,
            class_assignment_mode="first-deterministic",
            shuffle=True,
            seed=config.seed,
        )
    partitioner.dataset = HFDataset.from_dict({"gid": ids.tolist(), "label": labels.tolist()})
    try:
        return [np.asarray(partitioner.load_partition(i)["gid"], dtype=np.int64) for i in range(k)]
    except ValueError as error:  # the partitioner's own "cannot partition this" errors
        raise SplitError(
            f"partitioning={config.partitioning!r} cannot split {len(ids)} samples over {k} clients: {error}"
        ) from error


def check_split(split: Split, num_train: int) -> None:
    """Raise :class:`SplitError` unless the split's parts are disjoint and inside ``[0, num_train)``."""
    parts: Sequence[np.ndarray] = [split.aux_ids] + [
        a for c in split.clients for a in (c.train_ids, c.holdout_ids)
    ]
    every = np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
    if len(every) and (every.min() < 0 or every.max() >= num_train):
        raise SplitError("split holds ids outside the train set")
    if len(np.unique(every)) != len(every):
        raise SplitError("split parts overlap")


def check_run_plan(config: RunConfig) -> Split:
    """The run's split, with the ``withdrawals`` schedule checked against it; call before any process.

    Raises :class:`SplitError` (one line) when the split cannot be made (e.g. ``max-train-samples``
    leaves a client nothing) or a scheduled withdrawal cannot be satisfied by its client (a class it
    does not hold, more samples than it holds, a request after its ``client`` withdrawal). With
    ``client-data = own`` the clients' data is not known here: only the server's split is made.
    """
    from fedforget import data
    from fedforget.client_data import split_for
    from fedforget.withdrawals import WithdrawalError, check_feasible

    split = split_for(config)
    if getattr(config, "client_data", "shared") != "shared" or not config.withdrawals.strip():
        return split
    try:
        check_feasible(
            config.withdrawal_requests,
            client_train_ids=[c.train_ids for c in split.clients],
            labels=data.load(config).y_train,
            seed=config.seed,
        )
    except WithdrawalError as error:
        raise SplitError(f"Invalid value for 'withdrawals': {error}") from None
    return split
