"""FedEraser: Liu, Ma, Yang, Wang and Liu, "FedEraser: Enabling Efficient Client-Level Data Removal
from Federated Learning Models" (IEEE/ACM IWQoS 2021).

**During training** the server keeps, every ``every`` (Δ) rounds ``t_1 = 1, t_2 = 1 + Δ, ...``, the
global model ``w_{t_j}`` and every client's update ``U_{t_j}^k = w_{t_j + 1}^k - w_{t_j}``
(:class:`FedEraserStore`, a ``fedavg(on_round=...)`` recorder). Its size is the method's storage cost.

**Unlearning** (calibration training) rebuilds the model from the stored rounds only, with the
remaining clients ``R`` (those with training data left after the withdrawal) on their remaining
data ``D_k \\ D_u^k``::

    w~_1 = w_{t_1}
    for j = 1 .. m:
        every k in R trains ``calibration_epochs`` local epochs from w~_j:   U^_j^k = w^_j^k - w~_j
        U~_j^k[l] = ||U_{t_j}^k[l]|| * U^_j^k[l] / ||U^_j^k[l]||     (per tensor l: new direction,
                                                                    stored magnitude)
        w~_{j+1} = w~_j + sum_{k in R} (n'_k / n') U~_j^k,   n'_k = |D_k \\ D_u^k|

Calibration runs ``m = ceil(T / Δ)`` rounds of ``calibration_epochs`` (the paper uses half of the
local epochs: the default here is ``max(1, local_epochs // 2)``) instead of ``T`` rounds of
``local_epochs``: that is its speed-up over retraining. The withdrawn client is left out entirely
when all its data is withdrawn (client-level, the paper's setting); for a sample-level withdrawal it
calibrates on its remaining samples like every other remaining client.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np
import torch

from fedforget import training
from fedforget.baselines.base import (
    Forget,
    Observation,
    Observer,
    Original,
    UnlearnResult,
    build_model,
    check_forget,
    model_bytes,
)
from fedforget.client_data import ClientData
from fedforget.federated import RoundUpdate, client_seed, state_nbytes, weighted_average

__all__ = ["FedEraserStore", "calibrate_update", "calibration_step", "federaser"]


@dataclasses.dataclass(eq=False)
class FedEraserStore:
    """The server's FedEraser store: ``w_t`` and every ``U_t^k`` at the rounds ``1, 1+Δ, 1+2Δ, ...``.

    Use as ``fedavg(config, on_round=store)``; it copies what it keeps.
    """

    every: int = 1
    global_states: dict[int, dict[str, np.ndarray]] = dataclasses.field(default_factory=dict)
    updates: dict[int, dict[int, dict[str, np.ndarray]]] = dataclasses.field(default_factory=dict)
    weights: dict[int, dict[int, float]] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.every, bool) or not isinstance(self.every, int) or self.every < 1:
            raise ValueError(f"every (FedEraser's interval Δ) must be an integer >= 1, got {self.every!r}")

    def __call__(self, update: RoundUpdate) -> None:
        if (update.server_round - 1) % self.every:
            return
        t = update.server_round
        self.global_states[t] = {k: np.array(v, copy=True) for k, v in update.global_state.items()}
        self.updates[t] = {pid: update.update(pid) for pid in update.client_states}
        self.weights[t] = dict(update.weights)

    @property
    def rounds(self) -> list[int]:
        return sorted(self.global_states)

    @property
    def storage_bytes(self) -> int:
        """Bytes kept: the stored global models and client updates."""
        total = sum(state_nbytes(s) for s in self.global_states.values())
        return total + sum(state_nbytes(u) for per in self.updates.values() for u in per.values())


def calibrate_update(stored: dict[str, np.ndarray], new: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``||stored[l]|| * new[l] / ||new[l]||`` per tensor ``l`` (zero where ``new[l]`` is zero)."""
    out = {}
    for key, value in new.items():
        norm_new = float(np.linalg.norm(value))
        scale = float(np.linalg.norm(stored[key])) / norm_new if norm_new > 0 else 0.0
        out[key] = (value * scale).astype(value.dtype, copy=False)
    return out


def calibration_step(
    store: FedEraserStore,
    stored_round: int,
    current: dict[str, np.ndarray],
    client_states: dict[int, dict[str, np.ndarray]],
    weights: dict[int, float],
) -> dict[str, np.ndarray]:
    """One server step of the calibration: ``w~_{j+1} = w~_j + sum_k (n'_k / n') U~_j^k``.

    ``client_states``: partition id -> the state each remaining client returned after its calibration
    training from ``current`` (= ``w~_j``); ``weights``: their ``n'_k``. The server half of FedEraser,
    usable as is by a Flower server loop that sends ``current`` out and collects the replies.
    """
    if stored_round not in store.updates:
        raise ValueError(f"round {stored_round} is not in the store (stored: {store.rounds})")
    unknown = sorted(set(client_states) - set(store.updates[stored_round]))
    if unknown:
        raise ValueError(f"clients {unknown} have no stored update in round {stored_round}")
    calibrated, factors = [], []
    for pid, state in client_states.items():
        stored = store.updates[stored_round][pid]
        calibrated.append(calibrate_update(stored, {k: state[k] - current[k] for k in stored}))
        factors.append(float(weights[pid]))
    step = weighted_average(calibrated, factors)
    return {k: (v + step[k]).astype(v.dtype) if k in step else v for k, v in current.items()}


def federaser(
    original: Original,
    forget: Forget,
    *,
    calibration_epochs: int | None = None,
    evaluate: bool = False,
    observe: Observer | None = None,
) -> UnlearnResult:
    """Calibration training over ``original.federaser`` without the ``forget`` ids (module docstring).

    ``observe(round, state_dict)`` sees the model after each calibration round (its time not counted).
    """
    config = original.config
    store = original.federaser
    if store is None or not store.rounds:
        raise ValueError(
            "FedEraser needs the updates stored during training: build the Original with "
            "fedforget.baselines.train_original(config, federaser_every=Δ) "
            "or fedavg(on_round=FedEraserStore(Δ))"
        )
    forget = check_forget(config, forget)
    epochs = max(1, config.local_epochs // 2) if calibration_epochs is None else calibration_epochs
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"calibration_epochs must be an integer >= 1, got {calibration_epochs!r}")
    clients = []
    for pid in range(config.num_clients):
        client = ClientData.for_partition(config, pid)
        if pid in forget:
            client = client.without(forget[pid])
        if len(client.train_ids):
            clients.append(client)
    if not clients:
        raise ValueError("every client's data is withdrawn: no remaining client to calibrate with")
    observation = Observation(observe)
    start = time.perf_counter()
    model = build_model(config)
    first = store.rounds[0]
    current = {k: np.array(v, copy=True) for k, v in store.global_states[first].items()}
    history: list[dict[str, Any]] = []
    client_seconds = 0.0
    for j, t in enumerate(store.rounds, start=1):
        states, weights = {}, {}
        for client in clients:
            model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in current.items()})
            result = training.train(
                model,
                client.x_train,
                client.y_train,
                epochs=epochs,
                learning_rate=config.learning_rate,
                batch_size=config.batch_size,
                momentum=config.momentum,
                weight_decay=config.weight_decay,
                seed=client_seed(config, t, client.partition_id),
            )
            client_seconds += result.seconds
            states[client.partition_id] = {
                k: v.detach().numpy().copy() for k, v in model.state_dict().items()
            }
            weights[client.partition_id] = float(result.num_examples)
        current = calibration_step(store, t, current, states, weights)
        row: dict[str, Any] = {"phase": "federaser-calibration", "calibration-round": j, "stored-round": t}
        if evaluate:
            model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in current.items()})
            dataset_eval = _test_accuracy(config, model)
            row["test-accuracy"] = dataset_eval
        history.append(row)
        observation(j, current)
    seconds = time.perf_counter() - start - observation.seconds
    state_dict = {k: torch.from_numpy(np.array(v)) for k, v in current.items()}
    size = model_bytes(state_dict)
    return UnlearnResult(
        method="federaser",
        state_dict=state_dict,
        seconds=seconds,
        client_seconds=client_seconds,
        bytes_sent=2 * size * len(clients) * len(store.rounds),
        storage_bytes=store.storage_bytes,
        history=history,
        extra={
            "calibration-rounds": len(store.rounds),
            "calibration-epochs": epochs,
            "every": store.every,
            "remaining-clients": len(clients),
        },
    )


def _test_accuracy(config: Any, model: torch.nn.Module) -> float:
    from fedforget import data

    dataset = data.load(config)
    return training.evaluate(model, dataset.x_test, dataset.y_test).accuracy
