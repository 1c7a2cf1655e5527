"""Retraining from scratch without the withdrawn data: the gold standard every method is compared with.

Update rule: FedAvg (``fedforget.federated.fedavg``) from the run's seeded initial model ``w_0``, the
same ``T = num-rounds`` rounds and client seeds, with every client training on ``D_k \\ D_u^k``::

    w_{t+1} = sum_k (n'_k / n') w_{t+1}^k,    n'_k = |D_k \\ D_u^k|

The result is, bit for bit, the model the federation would have had if the withdrawn samples had
never been there (exact unlearning). Cost: the whole training again (``T`` rounds, every client),
nothing stored.
"""

from __future__ import annotations

import time

from fedforget.baselines.base import (
    Forget,
    Observation,
    Observer,
    Original,
    UnlearnResult,
    check_forget,
    model_bytes,
    remaining_exclude,
)
from fedforget.federated import fedavg

__all__ = ["retrain"]


def retrain(
    original: Original, forget: Forget, *, evaluate: bool = False, observe: Observer | None = None
) -> UnlearnResult:
    """FedAvg from scratch over ``original.config`` without the ``forget`` ids (same rounds and seeds).

    ``observe(round, state_dict)`` sees the model after every round (its time is not counted).
    """
    config = original.config
    forget = check_forget(config, forget)
    observation = Observation(observe)
    start = time.perf_counter()
    result = fedavg(
        config, exclude=remaining_exclude(forget), evaluate=evaluate, on_round=observation.on_round
    )
    seconds = time.perf_counter() - start - observation.seconds
    size = model_bytes(result.state_dict)
    return UnlearnResult(
        method="retrain",
        state_dict=result.state_dict,
        seconds=seconds,
        client_seconds=result.client_seconds,
        bytes_sent=2 * size * config.num_clients * config.num_rounds,
        storage_bytes=0,
        history=result.history,
        extra={"rounds": config.num_rounds, "training-seconds": result.seconds},
    )
