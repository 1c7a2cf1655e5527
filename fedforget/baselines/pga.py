"""Projected gradient ascent (PGA): Halimi, Kadhe, Rawat and Baracaldo, "Federated Unlearning: How to
Efficiently Erase a Client in FL?" (arXiv 2207.05521, 2022).

The withdrawing client ``i`` builds a **reference model**, the average of the *other* clients' last
local models, from the global model ``w`` and its own last local model ``w_i``. With FedAvg weights
``n_k`` (``n = sum_k n_k``)::

    w = sum_k (n_k / n) w_k   =>   w_ref = (n w - n_i w_i) / (n - n_i)

which is the paper's ``w_ref = (N w - w_i) / (N - 1)`` when all ``N`` clients weigh the same. It then
ascends the loss on its forget set, starting from ``w_i`` (our choice: public implementations differ,
some start from ``w_ref`` or ``w``; ``w_i`` is projected into the ball first) and staying in the L2
ball of radius ``delta`` around ``w_ref`` (:func:`fedforget.baselines.ascent.ascend`)::

    theta <- Proj_{||theta - w_ref|| <= delta}(theta + eta * grad L(theta; B))

and stops early once its accuracy on the forget set falls below ``tau`` (the paper's early stop on
the erased client's accuracy; default ``tau = 1.2 / K``, the paper's 0.12 for 10 classes) or after
``max_steps``. ``delta`` defaults to the paper's rule: one third of the mean distance between
``w_ref`` and randomly initialised models (``num_random`` of them, seeded). The client sends
``delta_w = theta - w``; the server adds it and runs ``repair_rounds`` FedAvg rounds on the remaining
data. One withdrawing client per call (the paper erases one client; for several, call it once per
client). For sample-level withdrawal the same procedure ascends on the withdrawn samples only.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from fedforget import training
from fedforget.baselines.ascent import ascend, param_distance, project_to_ball
from fedforget.baselines.base import (
    Forget,
    Observer,
    Original,
    UnlearnResult,
    build_model,
    check_forget,
    check_positive,
    model_bytes,
)
from fedforget.baselines.gradient_ascent import AscentOutcome, _check_pair, _check_rounds, apply_and_repair
from fedforget.client_data import ClientData

__all__ = ["PGAConfig", "PGAOutcome", "default_radius", "pga", "pga_delta", "reference_state"]

ModelFactory = Callable[[int], nn.Module]
"""``factory(seed)``: a freshly initialised model of the run's architecture."""


@dataclasses.dataclass(frozen=True)
class PGAConfig:
    """Settings of projected gradient ascent (module docstring)."""

    learning_rate: float = 0.01
    max_steps: int = 100
    batch_size: int = 32
    radius: float | None = None
    """L2 radius ``delta`` of the ball around ``w_ref``; None: :func:`default_radius`."""
    radius_fraction: float = 1.0 / 3.0
    num_random: int = 3
    stop_accuracy: float | None = None
    """Early stop once the forget-set accuracy is below this; None: ``1.2 / K``."""
    seed: int = 0

    def validate(self) -> None:
        check_positive("learning_rate", self.learning_rate)
        check_positive("batch_size", self.batch_size)
        check_positive("radius_fraction", self.radius_fraction)
        check_positive("num_random", self.num_random)
        if isinstance(self.max_steps, bool) or not isinstance(self.max_steps, int) or self.max_steps < 1:
            raise ValueError(f"max_steps must be an integer >= 1, got {self.max_steps!r}")
        if self.radius is not None:
            check_positive("radius", self.radius)
        if self.stop_accuracy is not None and not 0 <= self.stop_accuracy <= 1:
            raise ValueError(f"stop_accuracy must be in [0, 1], got {self.stop_accuracy!r}")


@dataclasses.dataclass(eq=False)
class PGAOutcome(AscentOutcome):
    """The client's PGA: its delta and history, plus ``w_ref``, the radius and the accuracy floor."""

    reference: dict[str, torch.Tensor]
    radius: float
    stop_accuracy: float


def reference_state(
    global_state: Mapping[str, torch.Tensor],
    client_state: Mapping[str, torch.Tensor],
    client_weight: float,
    total_weight: float,
) -> dict[str, torch.Tensor]:
    """``w_ref = (n w - n_i w_i) / (n - n_i)`` for the float entries (others: taken from ``w``)."""
    if not 0 <= client_weight < total_weight:
        raise ValueError(
            f"the client's weight n_i={client_weight} must be in [0, n={total_weight}): "
            "PGA needs at least one other client with data"
        )
    out = {}
    for key, value in global_state.items():
        if value.is_floating_point():
            out[key] = (total_weight * value - client_weight * client_state[key].to(value.dtype)) / (
                total_weight - client_weight
            )
        else:
            out[key] = value.clone()
    return out


def default_radius(
    reference: nn.Module, factory: ModelFactory, fraction: float, num_random: int, seed: int
) -> float:
    """``fraction`` x the mean parameter distance between ``reference`` and ``num_random`` fresh models."""
    centre = {n: p.detach() for n, p in reference.named_parameters()}
    distances = [param_distance(factory(seed * 7_919 + r + 1), centre) for r in range(num_random)]
    return fraction * float(np.mean(distances))


def pga_delta(
    global_model: nn.Module,
    client_state: Mapping[str, torch.Tensor],
    forget: tuple[np.ndarray, np.ndarray],
    *,
    client_weight: float,
    total_weight: float,
    factory: ModelFactory,
    config: PGAConfig,
) -> PGAOutcome:
    """The withdrawing client's side of PGA: ``w_ref``, the projected ascent from ``w_i``, the delta.

    ``factory(seed)`` builds a fresh (randomly initialised) model of the same architecture (for the
    default radius). ``history`` rows carry ``distance`` = ``||theta - w_ref||`` after projection.
    """
    config.validate()
    x, y = _check_pair("forget", forget)
    start = time.perf_counter()
    global_state = {k: v.detach().clone() for k, v in global_model.state_dict().items()}
    ref_state = reference_state(global_state, client_state, client_weight, total_weight)
    work = factory(config.seed)
    work.load_state_dict(ref_state)
    radius = config.radius
    if radius is None:
        radius = default_radius(work, factory, config.radius_fraction, config.num_random, config.seed)
    centre = {n: p.detach().clone() for n, p in work.named_parameters()}
    with torch.no_grad():  # start from w_i (its parameters; buffers stay w_ref's)
        for name, param in work.named_parameters():
            param.copy_(client_state[name])
    num_classes = int(work(torch.from_numpy(np.array(x[:1], dtype=np.float32))).shape[1])
    floor = 1.2 / num_classes if config.stop_accuracy is None else float(config.stop_accuracy)

    def stop(current: nn.Module) -> tuple[str | None, dict[str, Any]]:
        result = training.evaluate(current, x, y)
        reason = "accuracy-floor" if result.accuracy < floor else None
        return reason, {"forget-loss": result.loss, "forget-accuracy": result.accuracy}

    start_distance = project_to_ball(work, centre, radius)
    history, reason = ascend(
        work,
        x,
        y,
        learning_rate=config.learning_rate,
        max_steps=config.max_steps,
        batch_size=config.batch_size,
        seed=config.seed,
        stop=stop,
        ball=(centre, radius),
    )
    history[0]["distance"] = start_distance  # of the (projected) starting point w_i
    delta = {
        k: (v - global_state[k]).detach().clone()
        for k, v in work.state_dict().items()
        if v.is_floating_point()
    }
    seconds = time.perf_counter() - start
    return PGAOutcome(delta, history, reason, seconds, float("nan"), ref_state, float(radius), floor)


def pga(
    original: Original,
    forget: Forget,
    *,
    config: PGAConfig | None = None,
    repair_rounds: int = 1,
    evaluate: bool = False,
    observe: Observer | None = None,
) -> UnlearnResult:
    """PGA on the one withdrawing client (module docstring), its delta added to ``w``, then repair.

    ``observe(round, state_dict)``: as :func:`~fedforget.baselines.gradient_ascent.apply_and_repair`.
    """
    config = config or PGAConfig(seed=original.config.seed)
    config.validate()
    forget = check_forget(original.config, forget)
    _check_rounds(repair_rounds)
    if len(forget) != 1:
        raise ValueError(
            f"PGA erases one client at a time; forget names clients {sorted(forget)}: call it per client"
        )
    last = original.last_round
    if last is None:
        raise ValueError(
            "PGA needs the withdrawing client's last local model: build the Original with the last round "
            "recorded (fedforget.baselines.train_original, or pass last_round=RoundUpdate)"
        )
    ((pid, ids),) = forget.items()
    client = ClientData.for_partition(original.config, pid)
    _, x_f, y_f = client.subset(ids)
    client_state = {k: torch.from_numpy(np.asarray(v)) for k, v in last.client_states[pid].items()}
    start = time.perf_counter()
    outcome = pga_delta(
        build_model(original.config, original.state_dict),
        client_state,
        (x_f, y_f),
        client_weight=last.weights[pid],
        total_weight=float(sum(last.weights.values())),
        factory=lambda seed: build_model(original.config.replace(seed=seed)),
        config=config,
    )
    state, seconds, repair_client_seconds, repair_history = apply_and_repair(
        original, forget, outcome.delta, repair_rounds, started=start, evaluate=evaluate, observe=observe
    )
    size = model_bytes(state)
    history = [{"client": pid, **row} for row in outcome.history]
    return UnlearnResult(
        method="pga",
        state_dict=state,
        seconds=seconds,
        client_seconds=outcome.seconds + repair_client_seconds,
        bytes_sent=2 * size + 2 * size * original.config.num_clients * repair_rounds,
        storage_bytes=model_bytes(client_state),  # the client keeps its last local model
        history=history + repair_history,
        delta=outcome.delta,
        extra={
            "repair-rounds": repair_rounds,
            "radius": outcome.radius,
            "stop-accuracy": outcome.stop_accuracy,
            "stopped-because": outcome.stopped_because,
            "ascent-steps": len(outcome.history) - 1,
            "final-distance": float(outcome.history[-1].get("distance") or 0.0),
        },
    )
