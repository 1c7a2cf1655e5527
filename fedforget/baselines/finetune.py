"""Fine-tuning: continue FedAvg on the remaining data only (forgetting by catastrophic interference).

Update rule: from the trained global model ``w_T``, ``k`` more FedAvg rounds ``T+1 .. T+k`` (client
seeds of those rounds), every client training on ``D_k \\ D_u^k``::

    w_{t+1} = sum_k (n'_k / n') w_{t+1}^k,   t = T .. T+k-1

The withdrawn samples are never seen again, but nothing removes what ``w_T`` already learned from
them: forgetting relies on the later updates overwriting it (the weakest baseline of the federated
unlearning literature, e.g. Liu et al., IWQoS 2021; Halimi et al., 2022). Nothing stored.
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
    check_positive,
    model_bytes,
    remaining_exclude,
)
from fedforget.federated import fedavg

__all__ = ["finetune", "run_repair"]


def run_repair(
    original: Original,
    forget: dict,
    state: dict,
    rounds: int,
    *,
    method: str,
    evaluate: bool = False,
    observation: Observation | None = None,
) -> tuple[dict, float, float, list]:
    """``rounds`` FedAvg rounds from ``state`` on the remaining data, numbered after the run's last.

    Returns ``(state_dict, wall seconds, client seconds, history)``; shared by every method that
    repairs with FedAvg rounds (fine-tuning, gradient ascent, PGA). ``observation`` sees each round's
    model (its round numbers shifted by its ``offset``); its seconds are not in the wall seconds.
    """
    config = original.config
    if rounds == 0:
        return dict(state), 0.0, 0.0, []
    observation = observation or Observation(None)
    observed_before = observation.seconds
    start = time.perf_counter()
    result = fedavg(
        config,
        exclude=remaining_exclude(forget),
        initial_state=state,
        rounds=rounds,
        start_round=config.num_rounds + 1,
        evaluate=evaluate,
        on_round=observation.on_round,
    )
    history = [{**row, "phase": f"{method}-repair"} for row in result.history[1:]]
    seconds = time.perf_counter() - start - (observation.seconds - observed_before)
    return result.state_dict, seconds, result.client_seconds, history


def finetune(
    original: Original,
    forget: Forget,
    *,
    rounds: int = 1,
    evaluate: bool = False,
    observe: Observer | None = None,
) -> UnlearnResult:
    """``rounds`` more FedAvg rounds of ``original`` on the remaining data (module docstring).

    ``observe(round, state_dict)`` sees the model after every round (its time is not counted).
    """
    forget = check_forget(original.config, forget)
    if isinstance(rounds, bool) or not isinstance(rounds, int):
        raise ValueError(f"rounds must be an integer >= 1, got {rounds!r}")
    check_positive("rounds", rounds)
    state, seconds, client_seconds, history = run_repair(
        original,
        forget,
        original.state_dict,
        rounds,
        method="finetune",
        evaluate=evaluate,
        observation=Observation(observe),
    )
    size = model_bytes(state)
    return UnlearnResult(
        method="finetune",
        state_dict=state,
        seconds=seconds,
        client_seconds=client_seconds,
        bytes_sent=2 * size * original.config.num_clients * rounds,
        storage_bytes=0,
        history=history,
        extra={"rounds": rounds},
    )
