"""What a client measures about its forget set, locally, for the server's forgetting-rate evaluator.

The server sends a membership oracle (numbers only) and the global model; the client applies them to
its own data and returns only per-sample *decisions* (by global id) and aggregate numbers, never
features or labels:

* ``decisions``: ``{global id: judged member}`` for every sample of the forget set;
* ``forget-accuracy``, ``retain-accuracy``, ``reference-accuracy``: accuracy of the model on the forget
  set, on the client's remaining training data and on its held-out (never trained on) data;
* ``attack-auc``: AUC of the oracle's scores on the forget set against its held-out reference set
  (0.5 = the oracle cannot tell the forgotten data from data the model never saw).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from fedforget.metrics import attack_auc
from fedforget.mia import MembershipOracle
from fedforget.training import evaluate


@dataclasses.dataclass(frozen=True)
class ForgetReport:
    """A client's answer to a membership query."""

    ids: np.ndarray
    member: np.ndarray
    forget_accuracy: float
    retain_accuracy: float
    reference_accuracy: float
    attack_auc: float

    @property
    def decisions(self) -> dict[int, bool]:
        return {int(i): bool(m) for i, m in zip(self.ids, self.member, strict=True)}

    def metrics(self) -> dict[str, float]:
        return {
            "forget-accuracy": self.forget_accuracy,
            "retain-accuracy": self.retain_accuracy,
            "reference-accuracy": self.reference_accuracy,
            "attack-auc": self.attack_auc,
            "num-forget": float(len(self.ids)),
        }


def measure_forget_set(
    model: torch.nn.Module,
    oracle: MembershipOracle,
    forget: tuple[np.ndarray, np.ndarray, np.ndarray],
    reference: tuple[np.ndarray, np.ndarray],
    retain: tuple[np.ndarray, np.ndarray],
) -> ForgetReport:
    """Judge the forget set ``(ids, x, y)`` with ``oracle`` on ``model`` and measure accuracies."""
    ids, x_forget, y_forget = forget
    if len(ids) == 0:
        raise ValueError("the forget set is empty")
    x_ref, y_ref = reference
    forget_scores = oracle.scores(model, x_forget, y_forget)
    member = forget_scores >= oracle.threshold
    auc = float("nan")
    if len(x_ref):
        auc = attack_auc(forget_scores, oracle.scores(model, x_ref, y_ref))
    return ForgetReport(
        ids=np.asarray(ids, dtype=np.int64),
        member=np.asarray(member, dtype=bool),
        forget_accuracy=evaluate(model, x_forget, y_forget).accuracy,
        retain_accuracy=evaluate(model, *retain).accuracy,
        reference_accuracy=evaluate(model, x_ref, y_ref).accuracy,
        attack_auc=auc,
    )
