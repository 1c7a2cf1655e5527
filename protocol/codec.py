"""Encoding library objects as Flower records (part of the wire protocol both apps import).

Only numbers travel: an oracle is an ``ArrayRecord`` of numpy arrays plus a ``ConfigRecord`` of
scalars, never a pickle, so a client never executes code it receives.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord

from fedforget.mia import MembershipOracle, oracle_from_state


def oracle_to_records(oracle: MembershipOracle) -> tuple[ArrayRecord, ConfigRecord]:
    arrays, config = oracle.to_state()
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()}), ConfigRecord(
        dict(config)
    )


def oracle_from_records(
    arrays: ArrayRecord, config: ConfigRecord, model_factory: Callable[[], torch.nn.Module]
) -> MembershipOracle:
    numeric = {k: arrays[k].numpy() for k in arrays}
    return oracle_from_state(numeric, dict(config), model_factory)


def ids_to_config(ids: Mapping[str, np.ndarray]) -> ConfigRecord:
    """``{name: int array}`` as a ConfigRecord of int lists."""
    return ConfigRecord({k: [int(i) for i in v] for k, v in ids.items()})
