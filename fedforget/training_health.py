"""Is federated training working? One rule, checked after every training round.

A run whose model diverged, or collapsed onto the most common class, can go on to "unlearn" and report
a forgetting rate for a model that learned nothing; the round loop (``server/loop.py``) reports it
instead, loudly, in the console and as an event row of ``metrics.jsonl``. The rule:

* **diverging**: the round's training loss (the clients' mean final-epoch loss) is not finite, or is
  above the loss of the untrained initial model on the test split (round 0): training made the model
  worse than a random one;
* **collapsed**: from round 2 on, the test accuracy is at most the majority-class rate plus
  :data:`COLLAPSE_MARGIN` (the majority-class rate is the accuracy of always answering the test split's
  most common class): the model learned nothing a constant answer does not give. Round 1 is exempt
  (one round from a random model can be that weak on hard data).

Each problem comes with what to change. Flower-free: the loop passes numbers in.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

COLLAPSE_MARGIN = 0.005


@dataclasses.dataclass(frozen=True)
class HealthProblem:
    """A failed check: ``kind`` (``diverging`` / ``collapsed``), what was seen, and what to change."""

    kind: str
    finding: str
    advice: str

    @property
    def event(self) -> str:
        """The ``event`` of its ``metrics.jsonl`` row."""
        return f"training-{self.kind}"

    def text(self) -> str:
        return f"training {self.kind}: {self.finding}. {self.advice}"


def majority_rate(labels: np.ndarray) -> float:
    """The accuracy of always answering the most common label (0 for no labels)."""
    labels = np.asarray(labels, dtype=np.int64)
    return float(np.bincount(labels).max() / len(labels)) if len(labels) else 0.0


def check_round(
    *,
    server_round: int,
    train_loss: float,
    test_accuracy: float,
    initial_loss: float,
    majority: float,
    learning_rate: float,
) -> HealthProblem | None:
    """The module's rule for one training round; None when training looks healthy."""
    lower = f"lower learning-rate (now {learning_rate:g}; try --set learning-rate={learning_rate / 5:g})"
    scaling = (
        "and check the features' scales (a heavy-tailed column of a csv file is robust-scaled, "
        "README.md, Your own table)"
    )
    if not math.isfinite(train_loss) or (math.isfinite(initial_loss) and train_loss > initial_loss):
        return HealthProblem(
            "diverging",
            f"round {server_round} train loss {train_loss:.4g} "
            + (
                "is not finite"
                if not math.isfinite(train_loss)
                else f"is above the untrained model's loss {initial_loss:.4g}"
            ),
            f"The model is getting worse, not better: {lower}, {scaling}.",
        )
    if server_round >= 2 and test_accuracy <= majority + COLLAPSE_MARGIN:
        return HealthProblem(
            "collapsed",
            f"round {server_round} test accuracy {test_accuracy:.4f} is no better than always answering "
            f"the most common class ({majority:.4f})",
            f"The model predicts (nearly) one class; unlearning results on it mean nothing: {lower}, "
            f"{scaling}.",
        )
    return None
