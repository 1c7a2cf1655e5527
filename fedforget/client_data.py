"""One client's view of the data: its training samples and its held-out (non-member) samples.

Two ways to get it (``client-data`` in the run config):

* ``shared`` (simulation): ``ClientData.for_partition(config, 0)`` gives the same arrays a Flower
  client with ``partition-id=0`` trains on, computed from the run's ``dataset`` and split; ids are
  global ids of that dataset. Data and split are cached per process, since a simulated client
  answers many messages in one process.
* ``own`` (a device that holds only its own data): :meth:`ClientData.from_file` reads the device's
  ``.csv`` / ``.npz`` file with the public loader (:func:`fedforget.data.load_dataset`: the same
  formats, parsing and standardisation) and splits it itself (:class:`OwnData`). Its sample ids are
  its own: ``0 .. n-1`` in the loader's canonical order of the file (the file's train rows in file
  order, then its test rows), opaque to everyone else. The server's split has no client parts
  (:func:`split_for`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fedforget import data
from fedforget.config import RunConfig
from fedforget.data.base import DatasetInfo
from fedforget.data.registry import is_file_name
from fedforget.splits import Split, make_split


@functools.lru_cache(maxsize=8)
def split_for(config: RunConfig) -> Split:
    """The run's split (deterministic in the config; cached).

    With ``client-data = "own"`` the server's ``dataset`` is its own data only: every training
    sample is auxiliary data (shadow models), every test sample test data, and no client part exists
    (each device splits its own file, :meth:`ClientData.from_file`).
    """
    dataset = data.load(config)
    if config.client_data == "own":
        meta = {
            "dataset": config.dataset,
            "client-data": "own",
            "seed": config.seed,
            "num-train-total": dataset.num_train,
            "num-pool": dataset.num_train,
        }
        all_train = np.arange(dataset.num_train, dtype=np.int64)
        return Split(all_train, (), np.arange(len(dataset.y_test), dtype=np.int64), meta)
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
    "client_data",
)


def _split_key(config: RunConfig) -> RunConfig:
    """A config holding only the fields the split depends on (better cache hits)."""
    return RunConfig(**{name: getattr(config, name) for name in SPLIT_FIELDS})


_OWN_HOLDOUT = 53
"""Offset of the seeded stream that picks a device's held-out rows."""


class OwnDataError(ValueError):
    """A device's own data file that cannot be used for the run (the message says why, in one line)."""


@dataclasses.dataclass(frozen=True)
class OwnData:
    """A device's own data: its file, the share it holds out, and the seed of that choice.

    From the node config: ``data`` (``/path/file.csv`` or ``.npz``, or ``csv:PATH`` / ``npz:PATH``),
    optional ``holdout-fraction`` (default 0.2) and ``seed`` (default 0). The split is deterministic
    in these and the file: the device's train ids and held-out ids are a seeded permutation of
    ``0 .. n-1``, the first ``round(holdout-fraction * n)`` held out (at least one row is trained on).
    """

    path: str
    holdout_fraction: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.holdout_fraction < 1:
            raise OwnDataError(
                f"node config holdout-fraction={self.holdout_fraction!r}; expected a number in [0, 1)"
            )
        if self.seed < 0:
            raise OwnDataError(f"node config seed={self.seed!r}; expected an integer >= 0")

    @classmethod
    def from_node_config(cls, node_config: Mapping[str, Any]) -> OwnData:
        """From a SuperNode's ``--node-config`` (``data``, ``holdout-fraction``, ``seed``)."""
        if "data" not in node_config or not str(node_config["data"]).strip():
            raise OwnDataError(
                "client-data=own but the node config names no data file "
                "(start the SuperNode with --node-config \"data='/path/mine.csv'\")"
            )
        try:
            fraction = float(node_config.get("holdout-fraction", 0.2))
            seed = int(node_config.get("seed", 0))
        except (TypeError, ValueError) as error:
            raise OwnDataError(f"node config holdout-fraction / seed must be numbers: {error}") from None
        return cls(str(node_config["data"]).strip(), fraction, seed)

    @property
    def dataset_name(self) -> str:
        """The loader's name for the file: ``npz:PATH`` for ``*.npz``, else ``csv:PATH``."""
        if is_file_name(self.path):
            return self.path
        return f"npz:{self.path}" if self.path.lower().endswith(".npz") else f"csv:{self.path}"

    def rows(
        self, *, num_classes: int | None = None, input_shape: Sequence[int] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(x, y)`` of every row of the file, in the loader's canonical order (train rows, then test).

        ``y`` holds the file's labels, which must be the run's class indices (whole numbers in
        ``[0, num_classes)``); ``x`` must have the run's ``input_shape``.
        """
        try:
            dataset = data.load_dataset(self.dataset_name)
        except (data.DataError, OSError) as error:
            raise OwnDataError(f"device data: {error}") from None
        where = f"device data {self.path}"
        if input_shape is not None and tuple(dataset.info.input_shape) != tuple(int(d) for d in input_shape):
            raise OwnDataError(
                f"{where} has samples of shape {dataset.info.input_shape} (features), but the run's model "
                f"takes {tuple(int(d) for d in input_shape)}"
            )
        labels = _class_indices(dataset.classes, where)
        codes = np.concatenate([dataset.y_train, dataset.y_test])
        y = labels[codes]
        if num_classes is not None and len(y) and int(y.max()) >= num_classes:
            raise OwnDataError(
                f"{where} holds labels {sorted(set(labels.tolist()) - set(range(num_classes)))} outside "
                f"the run's classes 0..{num_classes - 1}"
            )
        return np.concatenate([dataset.x_train, dataset.x_test]), y


MODEL_INPUT_KEYS = ("input-shape", "num-classes")
"""Message-config keys with which the server tells an own-data device the run model's input and
output (the device cannot read the server's ``dataset``)."""


def model_input_config(info: DatasetInfo) -> dict[str, Any]:
    """The message-config entries that describe the run model's input shape and classes."""
    return {"input-shape": [int(d) for d in info.input_shape], "num-classes": int(info.num_classes)}


def info_from_message(msg_config: Mapping[str, Any]) -> DatasetInfo:
    """The run's :class:`DatasetInfo` as the server sent it (:func:`model_input_config`)."""
    missing = [k for k in MODEL_INPUT_KEYS if k not in msg_config]
    if missing:
        raise OwnDataError(f"client-data=own but the server's message lacks {', '.join(missing)}")
    shape = tuple(int(d) for d in msg_config["input-shape"])
    kind = "image" if len(shape) == 3 else "tabular"
    return DatasetInfo("own-data", shape, int(msg_config["num-classes"]), kind)


def _class_indices(classes: Sequence[Any] | None, where: str) -> np.ndarray:
    """The file's raw labels as class indices; they must be whole numbers >= 0."""
    if classes is None:
        raise OwnDataError(f"{where}: not a csv/npz file")
    try:
        values = np.asarray([float(c) for c in classes])
    except (TypeError, ValueError):
        values = np.asarray([np.nan])
    if not (np.isfinite(values).all() and (values >= 0).all() and (values == np.round(values)).all()):
        shown = ", ".join(repr(c) for c in list(classes)[:5])
        raise OwnDataError(
            f"{where}: labels must be the run's class indices 0, 1, ...; the file holds {shown}"
        )
    return values.astype(np.int64)


@dataclasses.dataclass(frozen=True, eq=False)
class ClientData:
    """Arrays of one client, indexed by its sample ids (global ids of the split, or its own ids)."""

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

    @classmethod
    def from_file(
        cls,
        own: OwnData,
        partition_id: int,
        *,
        num_classes: int | None = None,
        input_shape: Sequence[int] | None = None,
    ) -> ClientData:
        """The device's own file, split by ``own`` (see :class:`OwnData`); checked against the run.

        ``num_classes`` / ``input_shape``: the run model's (from the server); None skips that check.
        Raises :class:`OwnDataError` with a one-line reason when the file does not fit the run.
        """
        x, y = own.rows(num_classes=num_classes, input_shape=input_shape)
        ids = np.arange(len(y), dtype=np.int64)
        order = np.random.default_rng([own.seed, _OWN_HOLDOUT]).permutation(ids)
        num_holdout = min(int(round(own.holdout_fraction * len(ids))), len(ids) - 1)
        holdout, train = np.sort(order[:num_holdout]), np.sort(order[num_holdout:])
        return cls(partition_id, train, holdout, x[train], y[train], x[holdout], y[holdout])

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
