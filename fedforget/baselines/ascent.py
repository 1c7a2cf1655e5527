"""The bounded gradient-ascent loop shared by :mod:`gradient_ascent` and :mod:`pga`.

One step on a mini-batch ``B`` of the forget set (plain SGD on the negated loss, model in eval mode
so buffers such as BatchNorm statistics do not move)::

    theta <- theta + eta * grad_theta L(theta; B)
    theta <- c + min(1, r / ||theta - c||_2) (theta - c)        (only with a ball: centre c, radius r)

The norm is over all trainable parameters together. After every step ``stop(model)`` is asked
whether to stop (loss ceiling, accuracy floor); the loop also stops after ``max_steps``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from fedforget.models import criterion_for

__all__ = ["ascend", "param_distance", "project_to_ball"]


def param_distance(model: nn.Module, centre: Mapping[str, torch.Tensor]) -> float:
    """``||theta - c||_2`` over the trainable parameters."""
    with torch.no_grad():
        total = sum(
            float(((p - centre[n]) ** 2).sum()) for n, p in model.named_parameters() if p.requires_grad
        )
    return math.sqrt(total)


@torch.no_grad()
def project_to_ball(model: nn.Module, centre: Mapping[str, torch.Tensor], radius: float) -> float:
    """Project the parameters onto ``{theta : ||theta - c|| <= radius}``; returns the distance after."""
    distance = param_distance(model, centre)
    if distance > radius:
        scale = radius / distance
        for name, param in model.named_parameters():
            if param.requires_grad:
                param.copy_(centre[name] + scale * (param - centre[name]))
        distance = param_distance(model, centre)
    return distance


def ascend(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    *,
    learning_rate: float,
    max_steps: int,
    batch_size: int,
    seed: int,
    stop: Callable[[nn.Module], tuple[str | None, dict[str, Any]]],
    ball: tuple[Mapping[str, torch.Tensor], float] | None = None,
) -> tuple[list[dict[str, Any]], str]:
    """Ascend the loss on ``(x, y)`` in place (module docstring); returns ``(history, stopped_because)``.

    ``stop(model)`` returns ``(reason or None, measurements)``; it is asked once before the first
    step (the loop does nothing if the model is already past its bound) and after every step.
    """
    xt = torch.from_numpy(np.array(x, dtype=np.float32))
    yt = torch.from_numpy(np.array(y, dtype=np.int64))
    criterion = criterion_for(model)
    generator = torch.Generator().manual_seed(seed)
    model.eval()
    history: list[dict[str, Any]] = []
    reason, row = stop(model)
    history.append({"step": 0, **row})
    if reason is not None:
        return history, reason
    order = torch.randperm(len(xt), generator=generator)
    position = 0
    for step in range(1, max_steps + 1):
        if position >= len(order):
            order, position = torch.randperm(len(xt), generator=generator), 0
        idx = order[position : position + batch_size]
        position += batch_size
        model.zero_grad(set_to_none=True)
        loss = criterion(model(xt[idx]), yt[idx])
        loss.backward()
        with torch.no_grad():
            for param in model.parameters():
                if param.grad is not None:
                    param.add_(param.grad, alpha=learning_rate)  # ascent: + eta * grad
        model.zero_grad(set_to_none=True)
        extra: dict[str, Any] = {"batch-loss": float(loss.detach())}
        if ball is not None:
            extra["distance"] = project_to_ball(model, ball[0], ball[1])
        reason, row = stop(model)
        history.append({"step": step, **extra, **row})
        if reason is not None:
            return history, reason
    return history, "max-steps"
