"""Training the federation a federated baseline unlearns from, with what the baselines need recorded.

:func:`train_original` runs :func:`fedforget.federated.fedavg` (the same model as without recording)
with an ``on_round`` recorder that keeps the last round's :class:`~fedforget.federated.RoundUpdate`
(PGA's ``w_i``) and, with ``federaser_every = Δ``, FedEraser's store.
"""

from __future__ import annotations

from typing import Any

from fedforget.baselines.base import Original
from fedforget.baselines.federaser import FedEraserStore
from fedforget.config import RunConfig
from fedforget.federated import FedAvgResult, RoundUpdate, fedavg

__all__ = ["train_original"]


def train_original(
    config: RunConfig, *, federaser_every: int | None = 1, **fedavg_options: Any
) -> tuple[FedAvgResult, Original]:
    """FedAvg over ``config``, recording the last round and (unless None) FedEraser's store every Δ rounds."""
    store = None if federaser_every is None else FedEraserStore(every=federaser_every)
    last: list[RoundUpdate] = []

    def record(update: RoundUpdate) -> None:
        last[:] = [update]
        if store is not None:
            store(update)

    result = fedavg(config, on_round=record, **fedavg_options)
    original = Original(config, result.state_dict, last[0] if last else None, store)
    return result, original
