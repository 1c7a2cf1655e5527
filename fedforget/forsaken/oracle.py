"""Membership judgements for Forsaken's stopping rule: the proxy oracle, forgetting rate and AUC.

Forsaken stops on what a membership oracle (:class:`fedforget.mia.MembershipOracle`, or anything with
``scores(model, x, y)``, ``decide(model, x, y)`` and ``threshold``) says about the forget set. When no
oracle is given, :class:`LossThresholdOracle` stands in: score ``exp(-loss)`` (the true-class
confidence for cross-entropy), threshold fitted on the *original* model with Youden's J on the
retained samples (members) against the reference samples (non-members).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from fedforget import metrics
from fedforget.mia import strength

__all__ = ["LossThresholdOracle", "auc", "forgetting_rate", "youden_threshold"]


def youden_threshold(member_scores: np.ndarray, nonmember_scores: np.ndarray) -> float:
    """The threshold of the rule ``score >= t`` that maximises TPR - FPR (Youden's J) on members vs
    non-members: :func:`fedforget.mia.strength.youden_threshold` on the two score sets."""
    pos = np.asarray(member_scores, dtype=np.float64).reshape(-1)
    neg = np.asarray(nonmember_scores, dtype=np.float64).reshape(-1)
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError("a threshold needs at least one member and one non-member score")
    labels = np.concatenate([np.ones(len(pos), dtype=bool), np.zeros(len(neg), dtype=bool)])
    return strength.youden_threshold(np.concatenate([pos, neg]), labels)


def auc(scores_pos: np.ndarray, scores_neg: np.ndarray) -> float:
    """Mann-Whitney AUC ``P(s_pos > s_neg) + P(s_pos = s_neg) / 2`` (:func:`fedforget.metrics.attack_auc`);
    NaN when a side is empty or holds a non-finite score (a stopping rule must not raise mid-run)."""
    pos = np.asarray(scores_pos, dtype=np.float64).reshape(-1)
    neg = np.asarray(scores_neg, dtype=np.float64).reshape(-1)
    if len(pos) == 0 or len(neg) == 0 or not (np.all(np.isfinite(pos)) and np.all(np.isfinite(neg))):
        return float("nan")
    return metrics.attack_auc(pos, neg)


def forgetting_rate(member_before: np.ndarray, member_after: np.ndarray) -> float:
    """FR = (A_F - B_F) / B_T over one forget set (NaN when B_T = 0: nothing judged a member before).

    B_T / B_F: forget samples judged members / non-members on the model before unlearning; A_F:
    judged non-members after. Delegates to :func:`fedforget.metrics.forgetting_rate_from_arrays`
    (positions stand in for the sample ids).
    """
    before = np.asarray(member_before, dtype=bool).reshape(-1)
    after = np.asarray(member_after, dtype=bool).reshape(-1)
    if len(before) != len(after):
        raise ValueError(f"{len(before)} decisions before but {len(after)} after unlearning")
    if len(before) == 0:
        return float("nan")
    return metrics.forgetting_rate_from_arrays(np.arange(len(before)), before, after).fr


def per_sample_loss(model: nn.Module, x: np.ndarray, y: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """The model's own criterion per sample (cross-entropy, or multi-class hinge for the linear SVM)."""
    from fedforget.models import criterion_for

    criterion = criterion_for(model)
    criterion.reduction = "none"
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    was_training = model.training
    model.eval()
    out = []
    try:
        with torch.no_grad():
            for begin in range(0, len(x), batch_size):
                xb = torch.as_tensor(np.array(x[begin : begin + batch_size], dtype=np.float32), device=device)
                yb = torch.as_tensor(np.array(y[begin : begin + batch_size], dtype=np.int64), device=device)
                out.append(criterion(model(xb), yb).double().cpu())
    finally:
        model.train(was_training)
    return torch.cat(out).numpy() if out else np.empty(0)


class LossThresholdOracle:
    """Yeom et al.-style loss attack: member when ``exp(-loss) >= threshold`` (see the module docstring)."""

    name = "loss-threshold"

    def __init__(self, threshold: float) -> None:
        if not math.isfinite(threshold):
            raise ValueError(f"threshold must be finite, got {threshold}")
        self.threshold = float(threshold)

    @classmethod
    def fit(
        cls,
        model: nn.Module,
        members: tuple[np.ndarray, np.ndarray],
        nonmembers: tuple[np.ndarray, np.ndarray],
    ) -> LossThresholdOracle:
        """Youden threshold of ``exp(-loss)`` on ``model``'s members against its non-members."""
        oracle = cls(0.0)
        return cls(youden_threshold(oracle.scores(model, *members), oracle.scores(model, *nonmembers)))

    def scores(self, model: nn.Module, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.exp(-per_sample_loss(model, x, y))

    def decide(self, model: nn.Module, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return self.scores(model, x, y) >= self.threshold

    def __repr__(self) -> str:
        return f"LossThresholdOracle(threshold={self.threshold:.6g})"


def check_oracle(oracle: Any) -> None:
    """TypeError unless ``oracle`` has ``scores``, ``decide`` and a numeric ``threshold``."""
    missing = [name for name in ("scores", "decide") if not callable(getattr(oracle, name, None))]
    if missing or not isinstance(getattr(oracle, "threshold", None), int | float | np.floating):
        raise TypeError(
            f"oracle must be a membership oracle with scores(model, x, y), decide(model, x, y) and a numeric "
            f"threshold (e.g. fedforget.mia.fit_oracle(...)); got {type(oracle).__name__}"
        )
