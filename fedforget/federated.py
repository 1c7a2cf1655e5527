"""In-process FedAvg: the federation's training rounds without Flower, for experiments and baselines.

:func:`fedavg` computes, in one process, the model the Flower apps (``clients/app.py`` ``train``,
``server/loop.py``) produce for the same :class:`~fedforget.config.RunConfig`:

* the initial global model is ``models.build_model(config.model, info, seed=config.seed)`` (as
  ``server/setup.py``), or ``initial_state``;
* in round ``t = 1 .. T`` every client ``k`` starts from the global model ``w_t`` and trains
  ``local-epochs`` epochs of SGD (:func:`fedforget.training.train`, the run's ``learning-rate``,
  ``batch-size``, ``momentum``, ``weight-decay``) on its training samples ``D_k`` minus the excluded
  ids, seeded ``seed * 1_000_003 + t * 1_009 + k`` (the ClientApp's seed), giving ``w_{t+1}^k``;
* the server averages the returned ``state_dict`` arrays weighted by the number of examples
  (``flwr.serverapp.strategy.FedAvg``, same numpy arithmetic, float32)::

      w_{t+1} = sum_k (n_k / n) w_{t+1}^k,     n_k = |D_k \\ exclude_k|,  n = sum_k n_k

  A client left with no samples contributes weight 0 (as the ClientApp, which reports
  ``num-examples = 0``).

Differences from the Flower path: ``clients-per-round`` is ignored -- every round uses **all**
clients (the default ``clients-per-round = 0``); client updates are summed in partition order, where
Flower sums them in reply order, so results agree up to float32 rounding (tests check this). No
withdrawal schedule, run record, oracle or unlearning: pass the ids to leave out as ``exclude``
(what a tombstone does on a device). After each round the global model is evaluated on the test
split (``history``); ``seconds`` counts the training rounds only (local training + averaging), not
the per-round test evaluation.

**Recording hook** (for FedEraser, PGA and audits): ``on_round`` is called after every round (its
time is not counted in ``seconds``) with a :class:`RoundUpdate`: the round,
the global model ``w_t`` the clients started from, every client's returned state ``w_{t+1}^k``,
its weight ``n_k`` and the round's result ``w_{t+1}``. It only reads; results are identical with
and without it. ``start_round`` numbers the rounds (and so the client seeds) from another round
than 1, to continue a run:
``fedavg(config, initial_state=w_T, rounds=k, start_round=T + 1)`` trains rounds ``T+1 .. T+k``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from fedforget import data, models, training
from fedforget.client_data import ClientData
from fedforget.config import RunConfig

__all__ = [
    "FedAvgResult",
    "RoundUpdate",
    "client_seed",
    "fedavg",
    "fedavg_on_arrays",
    "state_nbytes",
    "weighted_average",
]


@dataclasses.dataclass(eq=False)
class FedAvgResult:
    """The final global model, one history row per round (round 0 = the initial model), and timing."""

    state_dict: dict[str, torch.Tensor]
    history: list[dict[str, Any]]
    seconds: float
    """Wall seconds of the training rounds (local training + aggregation), excluding evaluation."""

    client_seconds: float = 0.0
    """Sum over rounds and clients of the local training seconds (the clients' compute)."""

    @property
    def test_accuracy(self) -> float:
        return float(self.history[-1]["test-accuracy"])


@dataclasses.dataclass(frozen=True, eq=False)
class RoundUpdate:
    """What the server sees in one FedAvg round: ``w_t``, every client's ``w_{t+1}^k`` and ``n_k``.

    Arrays are the round's own numpy arrays: a recorder that keeps them must not modify them.
    """

    server_round: int
    global_state: dict[str, np.ndarray]
    client_states: dict[int, dict[str, np.ndarray]]
    weights: dict[int, float]
    averaged: dict[str, np.ndarray] | None = None
    """``w_{t+1}``, the global model the round produced (None where the caller did not give it)."""

    def update(self, partition_id: int) -> dict[str, np.ndarray]:
        """Client ``partition_id``'s update ``U_t^k = w_{t+1}^k - w_t`` (float entries only)."""
        state = self.client_states[partition_id]
        return {
            k: state[k] - self.global_state[k]
            for k in state
            if np.issubdtype(np.asarray(state[k]).dtype, np.floating)
        }


def state_nbytes(state: Mapping[str, Any]) -> int:
    """Bytes of a model state (numpy arrays or tensors): what sending or storing it costs."""
    total = 0
    for value in state.values():
        if isinstance(value, torch.Tensor):
            total += value.numel() * value.element_size()
        else:
            total += int(np.asarray(value).nbytes)
    return total


def client_seed(config: RunConfig, server_round: int, partition_id: int) -> int:
    """The seed of client ``partition_id``'s local training in ``server_round`` (as the ClientApp)."""
    return config.seed * 1_000_003 + server_round * 1_009 + partition_id


def weighted_average(states: list[Mapping[str, np.ndarray]], weights: list[float]) -> dict[str, np.ndarray]:
    """``sum_k (w_k / sum w) states[k]``, computed exactly as Flower's ``aggregate_arrayrecords``."""
    total = float(sum(weights))
    if not states or total <= 0:
        raise ValueError("no client update with a positive number of examples to average")
    factors = [w / total for w in weights]
    out: dict[str, np.ndarray] = {}
    for state, factor in zip(states, factors, strict=True):
        for key, value in state.items():
            if key not in out:
                out[key] = value * factor
            else:
                out[key] += value * factor
    return out


def _to_numpy(state: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in state.items()}


def _to_torch(state: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}


def fedavg(
    config: RunConfig,
    *,
    exclude: Mapping[int, np.ndarray] | None = None,
    initial_state: Mapping[str, torch.Tensor] | None = None,
    rounds: int | None = None,
    progress: bool = False,
    evaluate: bool = True,
    on_round: Callable[[RoundUpdate], None] | None = None,
    start_round: int = 1,
    training_seed: int | None = None,
) -> FedAvgResult:
    """Train ``rounds`` (default ``config.num_rounds``) FedAvg rounds over all ``config.num_clients``.

    ``exclude``: partition id -> global training ids that client never trains on (ids it does not
    hold are ignored). ``initial_state``: start from this model instead of the seeded initial one
    (rounds are numbered from ``start_round``, default 1: the client seeds are those rounds' seeds).
    ``evaluate``: test accuracy and loss after every round (``history``); without it only round 0
    and the last round are evaluated. ``on_round``: called with each round's :class:`RoundUpdate`
    (module docstring). ``start_round``: the number of the first round (client seeds follow it).
    ``training_seed``: seed the initial model and the clients' local training with this instead of
    ``config.seed`` (the split, and so every client's data, stays ``config.seed``'s): another training
    run of the same federation, e.g. for the U-LiRA check.
    """
    seeds = config if training_seed is None else config.replace(seed=int(training_seed))
    exclude = dict(exclude or {})
    unknown = sorted(set(exclude) - set(range(config.num_clients)))
    if unknown:
        raise ValueError(f"exclude names clients {unknown} outside [0, num-clients={config.num_clients})")
    num_rounds = config.num_rounds if rounds is None else int(rounds)
    if num_rounds < 0:
        raise ValueError(f"rounds must be >= 0, got {num_rounds}")
    if start_round < 1:
        raise ValueError(f"start_round must be >= 1, got {start_round}")
    dataset = data.load(config)
    info = dataset.info
    name = models.resolve_model_name(config.model, info)
    model = models.build_model(name, info, seed=seeds.seed)
    if initial_state is not None:
        model.load_state_dict(dict(initial_state))
    clients = []
    for pid in range(config.num_clients):
        client = ClientData.for_partition(config, pid)
        if pid in exclude and len(exclude[pid]):
            client = client.without(np.asarray(exclude[pid], dtype=np.int64))
        clients.append(client)

    def test_row(server_round: int, **extra: Any) -> dict[str, Any]:
        result = training.evaluate(model, dataset.x_test, dataset.y_test)
        return {"round": server_round, "test-accuracy": result.accuracy, "test-loss": result.loss, **extra}

    history = [test_row(start_round - 1, **{"train-loss": float("nan"), "seconds": 0.0})]
    global_state = _to_numpy(model.state_dict())
    total_seconds = client_seconds = 0.0
    last_round = start_round + num_rounds - 1
    bar = tqdm(
        range(start_round, last_round + 1), desc=f"fedavg {config.dataset}", disable=not progress, leave=False
    )
    for server_round in bar:
        start = time.perf_counter()
        states, weights, losses = [], [], []
        for client in clients:
            model.load_state_dict(_to_torch(global_state))
            if len(client.train_ids) == 0:
                states.append(_to_numpy(model.state_dict()))
                weights.append(0.0)
                losses.append(0.0)
                continue
            result = training.train(
                model,
                client.x_train,
                client.y_train,
                epochs=config.local_epochs,
                learning_rate=config.learning_rate,
                batch_size=config.batch_size,
                momentum=config.momentum,
                weight_decay=config.weight_decay,
                seed=client_seed(seeds, server_round, client.partition_id),
            )
            states.append(_to_numpy(model.state_dict()))
            weights.append(float(result.num_examples))
            losses.append(result.loss)
            client_seconds += result.seconds
        started_from = global_state
        averaged = weighted_average(states, weights)
        # keep each entry's dtype (an integer buffer stays integer, as load_state_dict casts it)
        global_state = {
            k: np.asarray(v).astype(global_state[k].dtype, copy=False) for k, v in averaged.items()
        }
        model.load_state_dict(_to_torch(averaged))
        seconds = time.perf_counter() - start  # the recorder's time is not training time
        total_seconds += seconds
        if on_round is not None:
            pids = [client.partition_id for client in clients]
            states_by_pid = dict(zip(pids, states, strict=True))
            on_round(
                RoundUpdate(
                    server_round,
                    started_from,
                    states_by_pid,
                    dict(zip(pids, weights, strict=True)),
                    averaged=global_state,
                )
            )
        train_loss = float(np.average(losses, weights=weights)) if sum(weights) else float("nan")
        if evaluate or server_round == last_round:
            history.append(test_row(server_round, **{"train-loss": train_loss, "seconds": seconds}))
            bar.set_postfix(acc=f"{history[-1]['test-accuracy']:.3f}")
        else:
            history.append({"round": server_round, "train-loss": train_loss, "seconds": seconds})
    bar.close()
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return FedAvgResult(
        state_dict=state, history=history, seconds=total_seconds, client_seconds=client_seconds
    )


def fedavg_on_arrays(
    model: torch.nn.Module,
    clients: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    rounds: int,
    local_epochs: int,
    learning_rate: float,
    batch_size: int,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    seed_of: Callable[[int, int], int],
) -> FedAvgResult:
    """FedAvg on explicit client arrays (no RunConfig, no dataset): trains ``model`` in place.

    The same rounds as :func:`fedavg`: in round ``t = 1 .. rounds`` every client ``k`` with data
    starts from ``w_t`` and runs :func:`fedforget.training.train` (``local_epochs`` epochs, the given
    recipe, seed ``seed_of(t, k)``); ``w_{t+1} = sum_k (n_k / n) w_{t+1}^k``
    (:func:`weighted_average`). A client with no samples contributes weight 0. Used by the judge's
    shadow federations (``fedforget.judge.shadow_federation``), which train on the server's auxiliary
    data with seeds of their own. ``history`` holds one ``{"round", "train-loss", "seconds"}`` row
    per round (no test evaluation).
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    if not clients or sum(len(y) for _, y in clients) == 0:
        raise ValueError("FedAvg needs at least one client with samples")
    global_state = _to_numpy(model.state_dict())
    history: list[dict[str, Any]] = []
    total_seconds = client_seconds = 0.0
    for server_round in range(1, int(rounds) + 1):
        start = time.perf_counter()
        states, weights, losses = [], [], []
        for k, (x, y) in enumerate(clients):
            model.load_state_dict(_to_torch(global_state))
            if len(y) == 0:
                states.append(_to_numpy(model.state_dict()))
                weights.append(0.0)
                losses.append(0.0)
                continue
            result = training.train(
                model,
                x,
                y,
                epochs=local_epochs,
                learning_rate=learning_rate,
                batch_size=batch_size,
                momentum=momentum,
                weight_decay=weight_decay,
                seed=int(seed_of(server_round, k)),
            )
            states.append(_to_numpy(model.state_dict()))
            weights.append(float(result.num_examples))
            losses.append(result.loss)
            client_seconds += result.seconds
        averaged = weighted_average(states, weights)
        global_state = {
            k: np.asarray(v).astype(global_state[k].dtype, copy=False) for k, v in averaged.items()
        }
        model.load_state_dict(_to_torch(global_state))
        seconds = time.perf_counter() - start
        total_seconds += seconds
        loss = float(np.average(losses, weights=weights))
        history.append({"round": server_round, "train-loss": loss, "seconds": seconds})
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return FedAvgResult(
        state_dict=state, history=history, seconds=total_seconds, client_seconds=client_seconds
    )
