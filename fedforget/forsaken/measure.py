"""What each unlearning step is judged on, and when the judged quantity has reached the target.

Per state (``docs/forsaken.md``, Stopping and History columns): accuracies on F, K_check (at most
:data:`~fedforget.forsaken.sets.MAX_MEASURE`) and R_check; the steering oracle's decisions on F, with

    member_fraction = mean_i [s(x_i) >= tau],   FR = forgetting rate of the decisions before -> now,
    AUC = AUC of F against the reference samples (0.5: F looks never seen): of the model's confidence
          in each sample's own label (``retrain_statistic="confidence"``, the default) or of the
          oracle's scores (``"oracle"``).

The stopping rule: ``target="fr"`` stops at FR >= ``target_fr`` (``nothing-to-forget`` when the oracle
judged no forget sample a member to begin with); ``target="retrain"`` at ``|AUC - 0.5| <= auc_tolerance``.
The best state maximises FR (``"fr"``) or ``-|AUC - 0.5|`` (``"retrain"``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from fedforget.cost import phase
from fedforget.forsaken.config import ForsakenConfig
from fedforget.forsaken.oracle import auc, forgetting_rate
from fedforget.forsaken.sets import MAX_MEASURE, Sets
from fedforget.forsaken.weights import Weights, chunked

__all__ = ["STATS", "Measure"]

STATS = ("forget_acc", "retain_acc", "reference_acc", "member_fraction", "fr", "auc")
"""The measured columns of a history row (a rejected step repeats the previous row's)."""


class Measure:
    """Measures the current weights with the steering ``oracle``; ``last_member``: its latest decisions."""

    def __init__(
        self, *, config: ForsakenConfig, oracle: Any, weights: Weights, sets: Sets, member_before: np.ndarray
    ) -> None:
        self.config, self.oracle, self.weights, self.sets = config, oracle, weights, sets
        self.member_before = member_before
        self.last_member = member_before

    def __call__(self) -> dict[str, Any]:
        """The :data:`STATS` of the current weights (and ``last_member`` updated)."""
        with phase("measure"):
            return self._stats()

    def _stats(self) -> dict[str, Any]:
        sets = self.sets
        snapshot = self.weights.snapshot()
        with torch.no_grad():

            def accuracy(x: torch.Tensor, y: torch.Tensor) -> float:
                return float((chunked(snapshot, x).argmax(1) == y).float().mean())

            forget_acc = accuracy(sets.xf, sets.yf)
            retain_acc = accuracy(sets.xkc[:MAX_MEASURE], sets.ykc[:MAX_MEASURE])
            reference_acc = accuracy(sets.xc, sets.yc)
            if self.config.retrain_statistic == "confidence":

                def confidence(x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
                    p = torch.softmax(chunked(snapshot, x).double(), dim=1)
                    return p.gather(1, y.view(-1, 1)).view(-1).cpu().numpy()

                reference = confidence(torch.cat([sets.xr, sets.xc]), torch.cat([sets.yr, sets.yc]))
                matched = auc(confidence(sets.xf, sets.yf), reference)
        scores_f = np.asarray(self.oracle.scores(snapshot, *sets.forget_np), dtype=np.float64)
        scores_r = np.asarray(self.oracle.scores(snapshot, *sets.reference_np), dtype=np.float64)
        member_after = scores_f >= self.oracle.threshold
        self.last_member = member_after
        return {
            "forget_acc": forget_acc,
            "retain_acc": retain_acc,
            "reference_acc": reference_acc,
            "member_fraction": float(member_after.mean()),
            "fr": forgetting_rate(self.member_before, member_after),
            "auc": matched if self.config.retrain_statistic == "confidence" else auc(scores_f, scores_r),
        }

    def judged(self, row: Mapping[str, Any]) -> float:
        """What the best state maximises: FR (``target="fr"``), or -|AUC - 0.5| (``"retrain"``)."""
        return float(row["fr"]) if self.config.target == "fr" else -abs(float(row["auc"]) - 0.5)

    def reached(self, row: Mapping[str, Any]) -> str | None:
        """``target-fr`` / ``target-auc`` / ``nothing-to-forget`` when ``row`` meets the target, else None."""
        config = self.config
        if config.target == "fr":
            if not self.member_before.any():
                return "nothing-to-forget"
            return "target-fr" if row["fr"] >= config.target_fr - 1e-12 else None
        return "target-auc" if abs(row["auc"] - 0.5) <= config.auc_tolerance + 1e-12 else None
