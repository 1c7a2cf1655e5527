"""Gradient ascent on the forget set, on its client, then FedAvg repair rounds.

The withdrawing client ``i`` starts from the global model ``w`` and *maximises* its loss on the
forget set ``D_u`` (:func:`fedforget.baselines.ascent.ascend`)::

    theta_0 = w,   theta_{s+1} = theta_s + eta * grad L(theta_s; B_s),   B_s a mini-batch of D_u

It is **bounded**, since unbounded ascent destroys the model: it stops as soon as the forget loss
``L(theta; D_u)`` reaches ``loss_ceiling`` (default: the loss of a constant, all-zero-logit model,
``ln K`` for cross-entropy -- the forget set is then predicted no better than by a model that knows
nothing), after ``max_steps`` steps, and with ``max_norm`` the step is projected onto
``||theta - w|| <= max_norm``. The client sends ``delta = theta - w``; the server adds the deltas of
all withdrawing clients (``w <- w + sum_i delta_i``, the rule for Forsaken masks) and then runs
``repair_rounds`` FedAvg rounds on the remaining data (:func:`~fedforget.baselines.finetune.run_repair`).
A standard baseline of the unlearning literature; :mod:`~fedforget.baselines.pga` (Halimi et al.,
2022) is the same ascent with a projection and a principled start.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from fedforget import training
from fedforget.baselines.ascent import ascend
from fedforget.baselines.base import (
    Forget,
    Observation,
    Observer,
    Original,
    UnlearnResult,
    add_delta,
    build_model,
    check_forget,
    check_positive,
    model_bytes,
)
from fedforget.baselines.finetune import run_repair
from fedforget.client_data import ClientData
from fedforget.models import criterion_for

__all__ = [
    "AscentConfig",
    "AscentOutcome",
    "apply_and_repair",
    "ascent_delta",
    "constant_model_loss",
    "gradient_ascent",
]


@dataclasses.dataclass(frozen=True)
class AscentConfig:
    """Settings of the bounded ascent (module docstring)."""

    learning_rate: float = 0.01
    max_steps: int = 100
    batch_size: int = 32
    loss_ceiling: float | None = None
    """Stop once the forget loss reaches this; None: :func:`constant_model_loss`."""
    max_norm: float | None = None
    """Optional L2 bound on ``||delta||`` over the parameters (projected every step)."""
    seed: int = 0

    def validate(self) -> None:
        check_positive("learning_rate", self.learning_rate)
        check_positive("batch_size", self.batch_size)
        if isinstance(self.max_steps, bool) or not isinstance(self.max_steps, int) or self.max_steps < 1:
            raise ValueError(f"max_steps must be an integer >= 1, got {self.max_steps!r}")
        if self.loss_ceiling is not None:
            check_positive("loss_ceiling", self.loss_ceiling)
        if self.max_norm is not None:
            check_positive("max_norm", self.max_norm)


@dataclasses.dataclass(eq=False)
class AscentOutcome:
    """What one client's ascent produced: the delta to send, its history and why it stopped."""

    delta: dict[str, torch.Tensor]
    history: list[dict[str, Any]]
    stopped_because: str
    seconds: float
    loss_ceiling: float


def constant_model_loss(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    """The criterion's loss of all-zero logits on labels ``y`` (``ln K`` for cross-entropy)."""
    with torch.no_grad():
        model.eval()
        num_classes = int(model(torch.from_numpy(np.array(x[:1], dtype=np.float32))).shape[1])
        logits = torch.zeros(len(y), num_classes)
        return float(criterion_for(model)(logits, torch.as_tensor(np.asarray(y), dtype=torch.int64)))


def _check_pair(name: str, pair: Any) -> tuple[np.ndarray, np.ndarray]:
    try:
        x, y = pair
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (x, y) of arrays") from None
    x, y = np.asarray(x), np.asarray(y)
    if len(x) == 0:
        raise ValueError(f"{name} is empty: nothing to ascend on")
    if len(x) != len(y):
        raise ValueError(f"{name}: {len(x)} samples but {len(y)} labels")
    return x, y


def ascent_delta(
    model: nn.Module, forget: tuple[np.ndarray, np.ndarray], config: AscentConfig
) -> AscentOutcome:
    """The bounded ascent of one client from ``model`` (not modified); returns its delta."""
    config.validate()
    x, y = _check_pair("forget", forget)
    start = time.perf_counter()
    work = _copy(model)
    centre = {n: p.detach().clone() for n, p in model.named_parameters()}
    ceiling = constant_model_loss(model, x, y) if config.loss_ceiling is None else float(config.loss_ceiling)

    def stop(current: nn.Module) -> tuple[str | None, dict[str, Any]]:
        loss = training.evaluate(current, x, y).loss
        return ("loss-ceiling" if loss >= ceiling else None), {"forget-loss": loss}

    ball = None if config.max_norm is None else (centre, float(config.max_norm))
    history, reason = ascend(
        work,
        x,
        y,
        learning_rate=config.learning_rate,
        max_steps=config.max_steps,
        batch_size=config.batch_size,
        seed=config.seed,
        stop=stop,
        ball=ball,
    )
    original = model.state_dict()
    delta = {
        k: (v - original[k]).detach().clone() for k, v in work.state_dict().items() if v.is_floating_point()
    }
    return AscentOutcome(delta, history, reason, time.perf_counter() - start, ceiling)


def _copy(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model)


def client_deltas(
    original: Original, forget: Mapping[int, np.ndarray], compute: Any
) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]], float]:
    """Run ``compute(model, client, x_forget, y_forget)`` on every withdrawing client; sum the deltas."""
    total: dict[str, torch.Tensor] = {}
    history: list[dict[str, Any]] = []
    seconds = 0.0
    for pid, ids in forget.items():
        client = ClientData.for_partition(original.config, pid)
        _, x_f, y_f = client.subset(ids)
        model = build_model(original.config, original.state_dict)
        outcome = compute(model, client, x_f, y_f)
        seconds += outcome.seconds
        history += [{"client": pid, **row} for row in outcome.history]
        history.append({"client": pid, "stopped-because": outcome.stopped_because})
        for key, value in outcome.delta.items():
            total[key] = total[key] + value if key in total else value.clone()
    return total, history, seconds


def apply_and_repair(
    original: Original,
    forget: Mapping[int, np.ndarray],
    delta: Mapping[str, torch.Tensor],
    repair_rounds: int,
    *,
    started: float,
    evaluate: bool = False,
    observe: Observer | None = None,
) -> tuple[dict[str, torch.Tensor], float, float, list[dict[str, Any]]]:
    """The server side of a client-side method: ``w + delta``, then ``repair_rounds`` FedAvg rounds.

    Returns ``(state_dict, wall seconds since started, repair client seconds, repair history)``;
    ``observe`` sees round 1 = ``w + delta`` and the repair rounds as 2, 3, ... (its time not counted).
    """
    state = add_delta(original.state_dict, delta)
    observation = Observation(observe)
    observation(1, state)
    repair_observation = Observation(observe, offset=1)
    state, _, repair_client_seconds, repair_history = run_repair(
        original,
        forget,
        state,
        repair_rounds,
        method="repair",
        evaluate=evaluate,
        observation=repair_observation,
    )
    seconds = time.perf_counter() - started - observation.seconds - repair_observation.seconds
    return state, seconds, repair_client_seconds, repair_history


def gradient_ascent(
    original: Original,
    forget: Forget,
    *,
    config: AscentConfig | None = None,
    repair_rounds: int = 1,
    evaluate: bool = False,
    observe: Observer | None = None,
) -> UnlearnResult:
    """Bounded ascent on every withdrawing client, deltas summed onto ``w``, then repair rounds.

    ``observe(round, state_dict)``: :func:`apply_and_repair` (its time is not counted).
    """
    config = config or AscentConfig(seed=original.config.seed)
    config.validate()
    forget = check_forget(original.config, forget)
    _check_rounds(repair_rounds)
    start = time.perf_counter()
    delta, history, client_seconds = client_deltas(
        original, forget, lambda model, client, x, y: ascent_delta(model, (x, y), config)
    )
    state, seconds, repair_client_seconds, repair_history = apply_and_repair(
        original, forget, delta, repair_rounds, started=start, evaluate=evaluate, observe=observe
    )
    size = model_bytes(state)
    return UnlearnResult(
        method="gradient-ascent",
        state_dict=state,
        seconds=seconds,
        client_seconds=client_seconds + repair_client_seconds,
        bytes_sent=2 * size * len(forget) + 2 * size * original.config.num_clients * repair_rounds,
        storage_bytes=0,
        history=history + repair_history,
        delta=delta,
        extra={
            "repair-rounds": repair_rounds,
            "ascent-steps": sum(1 for r in history if r.get("step")),
            "stopped-because": ",".join(r["stopped-because"] for r in history if "stopped-because" in r),
        },
    )


def _check_rounds(rounds: int) -> None:
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 0:
        raise ValueError(f"repair_rounds must be an integer >= 0, got {rounds!r}")
