"""Applying a step: the line search along a proposed step, and the accuracy guard that may refuse it.

**Line search** (``docs/forsaken.md``, Applying a step). A step proposes a mask ``m(size)`` for any size;
the scales ``s`` tried are ``max_scale, max_scale / 2, ...`` down to ``2^-max_backtracks``, the size
being ``eta * s``. From the largest, a scale *helps* when J and L_forget both fall on held-out batches;
the scan stops once a helpful scale is followed by one with a higher J (past the minimum along the
direction). The helpful scale with the lowest J is applied unless the guard says it went too far; then
the smaller scales are tried in turn. ``eta`` starts at ``step_size``, doubles (up to ``step_size``)
after a step accepted at scale >= 1 and halves after a rejected one.

**Accuracy guard.** A state goes *too far* when the accuracy on K_check or on R_check falls more than
``max(max_accuracy_drop, 1 / n)`` below the baseline (``n``: the samples measured; a single flipped
prediction must fit the budget), or, with ``target="retrain"``, when ``AUC < 0.5 - auc_tolerance`` (the
forget set looks *less* member-like than never-seen data). The baseline is the original model's
accuracies, or ``unlearn``'s ``accuracy_baseline``. Its *slack* is how far the guarded accuracies are
above their floors.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch

from fedforget.forsaken.config import ForsakenConfig
from fedforget.forsaken.inputs import GUARDED
from fedforget.forsaken.measure import Measure
from fedforget.forsaken.objective import Objective
from fedforget.forsaken.sets import MAX_MEASURE, Batch

__all__ = ["AccuracyGuard", "LineSearch", "Outcome"]

Proposal = Callable[[float], dict[str, torch.Tensor]]
"""size -> the mask a step proposes at that size (``eta * scale``)."""


class AccuracyGuard:
    """``too_far(row)`` and ``slack(row)`` relative to ``baseline`` (module docstring)."""

    def __init__(
        self, *, config: ForsakenConfig, baseline: Mapping[str, float], n_retain: int, n_reference: int
    ) -> None:
        self.config, self.baseline = config, dict(baseline)
        self.n_retain, self.n_reference = min(n_retain, MAX_MEASURE), n_reference
        self.blocked = False
        """Since the last repair: a step that helped was refused as too far (the budget binds)."""

    def too_far(self, row: Mapping[str, Any]) -> bool:
        config, start = self.config, self.baseline
        if row["retain_acc"] < start["retain_acc"] - max(config.max_accuracy_drop, 1 / self.n_retain) - 1e-12:
            return True
        if (
            row["reference_acc"]
            < start["reference_acc"] - max(config.max_accuracy_drop, 1 / self.n_reference) - 1e-12
        ):
            return True
        return config.target == "retrain" and row["auc"] < 0.5 - config.auc_tolerance

    def slack(self, row: Mapping[str, Any]) -> float:
        """How far the guarded accuracies are above their floors (the smaller of the two)."""
        return min(float(row[key]) - self.baseline[key] for key in GUARDED)


@dataclasses.dataclass
class Outcome:
    """What one line search did: the accepted ``scale`` (0 when rejected), J's terms on the held-out
    batches after (before, when rejected), the measurements and the applied mask (None when rejected);
    ``eta``: the base size the search used."""

    accepted: bool
    scale: float
    terms: dict[str, float]
    measured: dict[str, Any] | None
    mask: dict[str, torch.Tensor] | None
    eta: float


class LineSearch:
    """Applies proposed steps to ``objective.weights`` (module docstring); ``eta``: the next base size."""

    def __init__(
        self, *, config: ForsakenConfig, objective: Objective, measure: Measure, guard: AccuracyGuard
    ):
        self.config, self.objective, self.measure, self.guard = config, objective, measure, guard
        self.eta = config.step_size

    def scales(self) -> list[float]:
        out, scale = [], float(self.config.max_scale)
        while scale >= 2.0**-self.config.max_backtracks - 1e-12:
            out.append(scale)
            scale /= 2
        return out

    @torch.no_grad()
    def step(self, propose: Proposal, held_out: Batch) -> Outcome:
        """Search, apply (or not) and adapt ``eta``."""
        outcome = self._search(propose, held_out)
        if outcome.accepted:
            if outcome.scale >= 1.0:
                self.eta = min(self.config.step_size, 2 * self.eta)
        else:
            self.eta /= 2  # the next step starts smaller
        return outcome

    def reset(self) -> None:
        """``eta = step_size`` (after an escalation or a repair)."""
        self.eta = self.config.step_size

    def _search(self, propose: Proposal, held_out: Batch) -> Outcome:
        objective, weights = self.objective, self.objective.weights
        current = weights.params()
        before = objective.values(current, held_out)
        before_total = float(objective.total(before))
        scales = self.scales()

        def evaluate(scale: float) -> tuple[float, dict[str, float], dict[str, torch.Tensor]] | None:
            mask = propose(self.eta * scale)
            trial = {n: current[n] + mask[n] if n in mask else current[n] for n in current}
            after = objective.values(trial, held_out)
            total = float(objective.total(after))
            helps = math.isfinite(total) and total < before_total and after["forget"] < before["forget"]
            return (total, after, mask) if helps else None

        best: int | None = None
        found: dict[int, tuple[float, dict[str, float], dict[str, torch.Tensor]]] = {}
        for i, scale in enumerate(scales):
            result = evaluate(scale)
            if result is not None and (best is None or result[0] < found[best][0]):
                found[i], best = result, i
            elif best is not None:
                break  # past the minimum along the direction
        if best is None:
            return Outcome(False, 0.0, before, None, None, self.eta)
        for i in range(best, len(scales)):
            candidate = found.get(i) if i in found else evaluate(scales[i])
            if candidate is None:
                continue
            _, after, mask = candidate
            weights.add(mask)
            measured = self.measure()
            if not self.guard.too_far(measured):
                objective.refocus(self.measure.last_member)
                return Outcome(True, scales[i], after, measured, mask, self.eta)
            self.guard.blocked = True  # a step that helped went too far: the accuracy budget binds
            weights.subtract(mask)  # undo, try the next smaller scale
        return Outcome(False, 0.0, before, None, None, self.eta)
