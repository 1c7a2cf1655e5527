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


def ids_to_config(ids: Mapping[str, np.ndarray]) -> ConfigRecord:
    """``{name: int array}`` as a ConfigRecord of int lists."""
    return ConfigRecord({k: [int(i) for i in v] for k, v in ids.items()})
