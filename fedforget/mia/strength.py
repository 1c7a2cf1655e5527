"""How strong a membership oracle is: ROC curve, AUC, TPR at low FPR, balanced accuracy.

Members are the positive class, non-members the negative one; a higher score means "more
member-like". Conventions:

* **ROC curve** (:func:`roc_curve`): one operating point per distinct score ``t`` (decide member when
  ``score >= t``), from the strictest (FPR = TPR = 0) to the loosest (FPR = TPR = 1). Tied scores
  give one diagonal step.
* **AUC** (:func:`auc`): the Mann-Whitney statistic ``P(s_member > s_nonmember) + 0.5 P(=)``, which
  is exactly the area under that curve (ties count one half).
* **TPR at a fixed FPR** (:func:`tpr_at_fpr`): linear interpolation on the ROC curve, i.e. the TPR
  of the best (randomised) threshold rule whose FPR is exactly ``alpha``: take the last operating
  point with ``FPR <= alpha`` and interpolate towards the next one. With ``n`` non-members the
  smallest non-zero FPR a threshold can reach is ``1/n``; when ``alpha < 1/n`` the value is an
  interpolation between the operating point with no non-member above the threshold (FPR 0; its TPR
  is the fraction of members scoring above every non-member) and the first one with FPR ``1/n``, so
  it rests on the one or two highest-scoring non-members and is a noisy estimate.
  :func:`attack_strength` therefore also reports ``"<key>_resolved"``: whether ``alpha * n >= 1``
  (at least one non-member inside the FPR budget). For 0.1% FPR this needs >= 1,000 non-members.
* **Balanced accuracy** at the oracle's own threshold: ``(TPR + TNR) / 2`` of ``oracle.decide``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from torch import nn

    from fedforget.mia import MembershipOracle

__all__ = ["attack_strength", "auc", "roc_curve", "strength_from_scores", "tpr_at_fpr", "youden_threshold"]


def _scores(values: Any, what: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if len(array) == 0:
        raise ValueError(f"{what} is empty")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{what} contains NaN or infinite scores")
    return array


def roc_curve(scores_pos: Any, scores_neg: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fpr, tpr, thresholds)``: every operating point ``score >= t``, starting at (0, 0) with t = +inf."""
    pos = _scores(scores_pos, "member scores")
    neg = _scores(scores_neg, "non-member scores")
    thresholds = np.unique(np.concatenate([pos, neg]))[::-1]
    # counts of scores >= t for each distinct t, via sorted search
    pos_sorted, neg_sorted = np.sort(pos), np.sort(neg)
    tp = len(pos) - np.searchsorted(pos_sorted, thresholds, side="left")
    fp = len(neg) - np.searchsorted(neg_sorted, thresholds, side="left")
    fpr = np.concatenate([[0.0], fp / len(neg)])
    tpr = np.concatenate([[0.0], tp / len(pos)])
    return fpr, tpr, np.concatenate([[np.inf], thresholds])


def auc(scores_pos: Any, scores_neg: Any) -> float:
    """Area under the ROC curve = ``P(pos > neg) + 0.5 P(pos == neg)`` (Mann-Whitney U / (n_pos n_neg))."""
    pos = _scores(scores_pos, "member scores")
    neg = _scores(scores_neg, "non-member scores")
    both = np.concatenate([pos, neg])
    _, inverse, counts = np.unique(both, return_inverse=True, return_counts=True)
    # average rank (1-based) of each distinct value
    ends = np.cumsum(counts)
    avg_rank = ends - (counts - 1) / 2.0
    rank_sum = avg_rank[inverse[: len(pos)]].sum()
    u = rank_sum - len(pos) * (len(pos) + 1) / 2.0
    return float(u / (len(pos) * len(neg)))


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, alpha: float) -> float:
    """TPR at FPR ``alpha`` by linear interpolation on a ROC curve from :func:`roc_curve`."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    fpr = np.asarray(fpr, dtype=np.float64)
    tpr = np.asarray(tpr, dtype=np.float64)
    last = int(np.searchsorted(fpr, alpha, side="right")) - 1  # last point with fpr <= alpha
    if last >= len(fpr) - 1 or fpr[last] == alpha:
        return float(tpr[last])
    f0, f1, t0, t1 = fpr[last], fpr[last + 1], tpr[last], tpr[last + 1]
    return float(t0 + (t1 - t0) * (alpha - f0) / (f1 - f0))


def youden_threshold(scores: Any, labels: Any) -> float:
    """The threshold maximising Youden's J = TPR - FPR (= 2 x balanced accuracy - 1) for ``score >= t``.

    ``labels``: True/1 = member. Among the distinct scores ``s_1 > s_2 > ...`` the best rule "member
    iff score >= s_k" is found (the strictest one when several tie); the returned threshold is the
    midpoint ``(s_k + s_{k+1}) / 2`` (``s_k`` itself when it is the lowest score), which makes the same
    decisions on the calibration data and leaves the largest margin on both sides for new data.
    """
    scores = _scores(scores, "calibration scores")
    labels = np.asarray(labels).reshape(-1).astype(bool)
    if len(labels) != len(scores):
        raise ValueError(f"{len(scores)} scores but {len(labels)} labels")
    if labels.all() or not labels.any():
        raise ValueError("the calibration data needs both members and non-members")
    fpr, tpr, thresholds = roc_curve(scores[labels], scores[~labels])
    j = tpr[1:] - fpr[1:]  # skip the (0, 0) point at t = +inf
    k = int(np.argmax(j))
    distinct = thresholds[1:]
    if k + 1 < len(distinct):
        return float((distinct[k] + distinct[k + 1]) / 2.0)
    return float(distinct[k])


def attack_strength(
    oracle: MembershipOracle,
    model: nn.Module,
    x_members: np.ndarray,
    y_members: np.ndarray,
    x_nonmembers: np.ndarray,
    y_nonmembers: np.ndarray,
) -> dict[str, Any]:
    """AUC, TPR at 1% and 0.1% FPR, balanced accuracy at the oracle's threshold, and counts.

    ``x_members`` are samples ``model`` trained on, ``x_nonmembers`` samples it never saw (from the
    same distribution). Returns a JSON-ready dict::

        {"oracle", "auc", "tpr_at_1pct_fpr", "tpr_at_0.1pct_fpr", "tpr_at_1pct_fpr_resolved",
         "tpr_at_0.1pct_fpr_resolved", "balanced_accuracy", "tpr_at_threshold", "fpr_at_threshold",
         "threshold", "num_members", "num_nonmembers"}
    """
    pos = oracle.scores(model, x_members, y_members)
    neg = oracle.scores(model, x_nonmembers, y_nonmembers)
    return strength_from_scores(pos, neg, oracle.threshold, name=oracle.name)


def strength_from_scores(
    scores_members: Any, scores_nonmembers: Any, threshold: float, name: str = "", with_roc: bool = False
) -> dict[str, Any]:
    """:func:`attack_strength` from precomputed scores; ``with_roc`` adds ``"roc": {"fpr", "tpr"}`` arrays."""
    pos = _scores(scores_members, "member scores")
    neg = _scores(scores_nonmembers, "non-member scores")
    fpr, tpr, _ = roc_curve(pos, neg)
    tpr_thr = float(np.mean(pos >= threshold))
    fpr_thr = float(np.mean(neg >= threshold))
    result: dict[str, Any] = {
        "oracle": name,
        "auc": auc(pos, neg),
        "tpr_at_1pct_fpr": tpr_at_fpr(fpr, tpr, 0.01),
        "tpr_at_0.1pct_fpr": tpr_at_fpr(fpr, tpr, 0.001),
        "tpr_at_1pct_fpr_resolved": bool(0.01 * len(neg) >= 1),
        "tpr_at_0.1pct_fpr_resolved": bool(0.001 * len(neg) >= 1),
        "balanced_accuracy": (tpr_thr + 1.0 - fpr_thr) / 2.0,
        "tpr_at_threshold": tpr_thr,
        "fpr_at_threshold": fpr_thr,
        "threshold": float(threshold),
        "num_members": len(pos),
        "num_nonmembers": len(neg),
    }
    if with_roc:
        result["roc"] = {"fpr": fpr, "tpr": tpr}
    return result
