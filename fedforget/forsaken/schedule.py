"""The schedule: when a run has stalled, and what it does then (escalate, repair, or stop).

``docs/forsaken.md``, Stopping. After each step, the step made **progress** when the judged quantity
improved on its best so far (FR up with ``target="fr"``, ``|AUC - 0.5|`` down with ``"retrain"``) or
when L_forget fell below ``(1 - 0.05)`` of its best value. After ``patience`` steps without progress:

1. **escalate** while the level ``e < 1`` (and ``escalation > 0``): ``e <- min(1, e + escalation)``,
   which moves the targets further (:mod:`fedforget.forsaken.targets`) and weighs the keep terms
   ``(1 - e)`` (:mod:`fedforget.forsaken.objective`); the best L_forget and ``eta`` start over;
2. else **repair**, when ``repair_steps > 0``, fewer than ``max_repairs`` repairs ran, a step was
   accepted since the last repair, the accuracy guard refused a helpful step, the best state improved
   since the last repair and a step of the budget is left: :func:`repair` runs, and is kept only if it
   widens the guard's slack; then ``e = 0`` and forgetting resumes (a repair counts as one step);
3. else **stop** (``stalled``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from fedforget.forsaken.config import ForsakenConfig
from fedforget.forsaken.objective import Objective, kl_to_targets

__all__ = ["PROGRESS", "Schedule", "repair"]

PROGRESS = 0.05
"""A step makes progress when the forget term falls by this fraction of its best value."""


class Schedule:
    """Progress bookkeeping and the decision after a stall (module docstring)."""

    def __init__(self, config: ForsakenConfig, first: Mapping[str, Any]) -> None:
        self.config = config
        self.stale = 0
        self.best_fr, self.best_gap = first["fr"], abs(first["auc"] - 0.5)
        self.best_forget = first["forget_loss"]
        self.repairs, self.forgot_since_repair, self.value_at_repair = 0, False, -math.inf

    def observe(self, row: Mapping[str, Any], *, accepted: bool) -> None:
        """Count ``row`` as progress or not."""
        forget_now = row["forget_loss"] if accepted else math.inf
        if self.config.target == "fr":
            progress = row["fr"] > self.best_fr or forget_now < (1 - PROGRESS) * self.best_forget
        else:
            progress = abs(row["auc"] - 0.5) < self.best_gap or forget_now < (1 - PROGRESS) * self.best_forget
        self._best(row)
        self.best_forget = min(self.best_forget, forget_now)
        self.stale = 0 if progress else self.stale + 1
        if accepted:
            self.forgot_since_repair = True

    def _best(self, row: Mapping[str, Any]) -> None:
        self.best_fr, self.best_gap = max(self.best_fr, row["fr"]), min(self.best_gap, abs(row["auc"] - 0.5))

    def stalled(self) -> bool:
        return self.stale >= self.config.patience

    def move(self, *, level: float, guard_blocked: bool, best_value: float, step: int) -> str:
        """After a stall: ``"escalate"``, ``"repair"`` or ``"stop"``."""
        config = self.config
        if config.escalation > 0 and level < 1.0:
            return "escalate"
        if (
            config.repair_steps > 0
            and self.repairs < config.max_repairs
            and self.forgot_since_repair
            and guard_blocked
            and best_value > self.value_at_repair  # the last repair paid off (or there was none)
            and step < config.max_steps
        ):
            return "repair"
        return "stop"

    def escalated(self) -> None:
        self.best_forget, self.stale = math.inf, 0

    def repairing(self, best_value: float) -> None:
        self.repairs += 1
        self.value_at_repair = best_value

    def repaired(self, row: Mapping[str, Any]) -> None:
        self._best(row)
        self.best_forget, self.stale, self.forgot_since_repair = math.inf, 0, False


def repair(objective: Objective, *, steps: int, lr: float) -> None:
    """The repair phase: ``steps`` Adam steps on the masked parameters' change ``M``, minimising

        L_repair(w) = KL-mean_{B_k}( p_{w_0} || p_w ) + KL-mean_{B_r}( p_{w_0} || p_w )
                      + KL-mean_{F}( p_{w_a} || p_w ),

    on fresh batches each step, with ``w_a`` the weights at the start of the phase: the model is pulled
    back to the original model's confidence vectors on retained and never-seen data (which wins back
    accuracy without fitting the client's own label distribution, as the cross-entropy would), while the
    forget set's confidence vectors stay where forgetting left them. Adam's learning rate for a tensor
    is ``lr * RMS(tensor in w_0)``. Replaces ``objective.weights.delta``; the caller decides whether to
    keep it."""
    weights, sets, temperature = objective.weights, objective.sets, objective.temperature
    with torch.no_grad():
        anchor = torch.softmax(temperature * weights.forward(weights.params(), sets.xf), dim=1)
    deltas = {n: weights.delta[n].clone().requires_grad_() for n in weights.masked}
    # Adam moves every weight by about its learning rate: scale it to each tensor's RMS
    groups = [
        {"params": [d], "lr": lr * max(float(weights.base[n].pow(2).mean().sqrt()), 1e-3)}
        for n, d in deltas.items()
    ]
    optimizer = torch.optim.Adam(groups)
    for _ in range(steps):
        batch = sets.next_batch()
        params = {n: weights.base[n] + (deltas[n] if n in deltas else weights.delta[n]) for n in weights.base}
        logits_k = weights.forward(params, sets.xk[batch.retain])
        logits_f = weights.forward(params, sets.xf[batch.forget])
        logits_r = weights.forward(params, sets.xr[batch.reference])
        loss = (
            kl_to_targets(temperature * logits_k, objective.retain_probs[batch.retain])
            + kl_to_targets(temperature * logits_r, objective.reference_probs[batch.reference])
            + kl_to_targets(temperature * logits_f, anchor[batch.forget])
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    for n, d in deltas.items():
        weights.delta[n] = d.detach().clone()
