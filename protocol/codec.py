"""Encoding library objects as Flower records (part of the wire protocol both apps import).

Only numbers travel: the judge is an ``ArrayRecord`` of numpy arrays plus a ``ConfigRecord`` of
scalars and strings, never a pickle, so a client never executes code it receives. The judge travels
only in ``query.judge``, never in an unlearning message.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord

from fedforget.judge import Judge


def judge_to_records(judge: Judge) -> tuple[ArrayRecord, ConfigRecord]:
    """``(judge, judge-config)`` records of :meth:`fedforget.judge.Judge.to_state`."""
    arrays, config = judge.to_state()
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()}), ConfigRecord(
        dict(config)
    )


def judge_from_records(
    arrays: ArrayRecord, config: ConfigRecord, model_factory: Callable[[], torch.nn.Module]
) -> Judge:
    """The inverse of :func:`judge_to_records` (``model_factory``: the target's architecture)."""
    return Judge.from_state({k: arrays[k].numpy() for k in arrays}, dict(config), model_factory)


SAMPLES_X, SAMPLES_Y = "x", "y"
"""The arrays of a record of samples (:func:`samples_to_record`)."""


def record_nbytes(record: ArrayRecord) -> int:
    """The bytes of a record's arrays as they travel (the payload the benchmarks count as sent)."""
    return sum(record[k].numpy().nbytes for k in record)


def samples_to_record(samples: tuple[np.ndarray, np.ndarray]) -> ArrayRecord:
    """Samples ``(x, y)`` as an ``ArrayRecord`` (``x``: float32 features, ``y``: int64 labels)."""
    x, y = samples
    return ArrayRecord(
        {
            SAMPLES_X: Array(np.ascontiguousarray(x, dtype=np.float32)),
            SAMPLES_Y: Array(np.ascontiguousarray(y, dtype=np.int64)),
        }
    )


def samples_from_record(
    record: ArrayRecord, *, feature_shape: tuple[int, ...], num_classes: int, what: str
) -> tuple[np.ndarray, np.ndarray]:
    """The inverse of :func:`samples_to_record`, checked against the receiver's data: ``x`` of shape
    ``(n, *feature_shape)`` and finite, ``y`` of ``n`` labels in ``[0, num_classes)``; a ValueError
    naming ``what`` otherwise."""
    if set(record) != {SAMPLES_X, SAMPLES_Y}:
        raise ValueError(f"{what} must hold exactly the arrays 'x' and 'y', got {sorted(record)}")
    x = np.asarray(record[SAMPLES_X].numpy(), dtype=np.float32)
    y = np.asarray(record[SAMPLES_Y].numpy()).reshape(-1)
    if tuple(x.shape[1:]) != tuple(feature_shape) or len(x) != len(y):
        raise ValueError(
            f"{what}: x has shape {tuple(x.shape)} and y {len(y)} labels; this device's samples have "
            f"features of shape {tuple(feature_shape)}"
        )
    if not np.isfinite(x).all():
        raise ValueError(f"{what}: x holds non-finite values")
    if y.dtype.kind not in "iu" or (len(y) and (y.min() < 0 or y.max() >= num_classes)):
        raise ValueError(f"{what}: labels must be integers in [0, {num_classes})")
    return x, y.astype(np.int64)


def ids_to_config(ids: Mapping[str, np.ndarray]) -> ConfigRecord:
    """``{name: int array}`` as a ConfigRecord of int lists."""
    return ConfigRecord({k: [int(i) for i in v] for k, v in ids.items()})
