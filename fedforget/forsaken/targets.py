"""Per-sample confidence targets: what each forget sample should look like once it is forgotten.

"Perfectly forgotten" data is data the model never saw, so a forget sample's target is the confidence
vector of a never-seen (reference) sample. Which one is chosen by **rank matching** (1-D optimal
transport on the true-class confidence), within the sample's class:

* the forget samples of class ``c`` that must move are sorted by their true-class confidence
  ``p_y`` on the original model, and so is the *pool* of class ``c`` (reference confidence vectors);
* the ``k``-th of ``n`` forget samples gets the pool vector at quantile ``(k + 1/2) / n``.

So the forget set ends up spread like the pool (not collapsed onto one class mean), and each sample
moves as little as the ranking allows (the most confident forget sample gets the most confident pool
vector). When class ``c`` has fewer than :data:`MIN_POOL` pool vectors, the pool of all classes is used
with each vector's true-class entry swapped into position ``c`` (:func:`swap_to_class`): the swap
keeps the sorted confidence vector, ``p_y`` and the loss, which is all a confidence-based membership
attack reads.

Which samples move, and towards which pool, depends on the stopping target (``docs/forsaken.md``):
``target="fr"`` moves only the samples the oracle judges members, towards reference samples the oracle
judges non-members (below the threshold with a margin); samples already judged non-members keep their
own original confidence vector as target. ``target="retrain"`` moves every forget sample towards the
whole reference set, so that the forget set's scores are distributed like never-seen data's.

``targets="class-mean"`` instead gives every forget sample of class ``c`` the mean reference confidence
vector of class ``c`` (:func:`class_mean_targets`). **Escalation** to level ``e`` in ``[0, 1]``
(:meth:`ForgetTargets.at_level`) moves the targets further from the threshold: rank targets of
``target="fr"`` are re-matched to the non-members scoring lowest, leaving out the fraction
``m_e = m_0 + 0.9 e (1 - m_0)`` closest to the threshold (``m_0 = nonmember_margin``); otherwise they
go towards the uniform vector, ``(1 - e) t + e / K``.

Confidence vectors are ``softmax(T z)``: ``T = 1`` for cross-entropy models, fitted on the reference
set for the others (:func:`fit_temperature`: a hinge-loss SVM's scores are margins, not log-probabilities).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

__all__ = [
    "DEEPEST",
    "MIN_POOL",
    "ForgetTargets",
    "class_mean_targets",
    "fit_temperature",
    "nonmember_pool",
    "rank_matched_targets",
    "swap_to_class",
]

MIN_POOL = 3
"""A class needs this many pool vectors of its own; below, the all-class swapped pool is used."""
DEEPEST = 0.9
"""At full escalation, the pool is the 10 % of the judged non-members scoring lowest (beyond the margin)."""


def swap_to_class(probs: torch.Tensor, y_from: torch.Tensor, c: int) -> torch.Tensor:
    """Rows of ``probs`` (true class ``y_from``) with entries ``y_from`` and ``c`` swapped: class ``c``
    then has the row's true-class confidence, and the sorted vector is unchanged."""
    out = probs.clone()
    rows = torch.arange(len(out))
    out[rows, c], out[rows, y_from] = probs[rows, y_from], probs[rows, c]
    return out


def rank_matched_targets(
    probs: torch.Tensor,
    y: torch.Tensor,
    move: torch.Tensor,
    pool_probs: torch.Tensor,
    pool_y: torch.Tensor,
) -> torch.Tensor:
    """``N x K`` targets: row ``i`` is ``probs[i]`` where ``move[i]`` is False, else the pool vector of
    the same class at the rank of ``probs[i, y_i]`` among the moving samples of that class.

    ``probs``: ``N x K`` confidence vectors of the forget set on the original model; ``y``: their
    labels; ``move``: ``N`` bools; ``pool_probs`` / ``pool_y``: ``M x K`` reference vectors and labels
    (M >= 1 when any sample moves). Deterministic (ties are broken by position).
    """
    if probs.dim() != 2 or pool_probs.dim() != 2 or probs.shape[1] != pool_probs.shape[1]:
        raise ValueError(
            f"probs ({tuple(probs.shape)}) and pool_probs ({tuple(pool_probs.shape)}) must be N x K, M x K"
        )
    if len(y) != len(probs) or len(move) != len(probs) or len(pool_y) != len(pool_probs):
        raise ValueError("probs / y / move and pool_probs / pool_y must have matching lengths")
    targets = probs.clone()
    if not bool(move.any()):
        return targets
    if len(pool_probs) == 0:
        raise ValueError("no pool vectors to take targets from")
    rows = torch.arange(len(pool_probs))
    pool_conf = pool_probs[rows, pool_y]
    for c in torch.unique(y[move]).tolist():
        chosen = torch.nonzero(move & (y == c)).reshape(-1)
        own = pool_y == c
        if int(own.sum()) >= MIN_POOL:
            candidates, conf = pool_probs[own], pool_conf[own]
        else:
            candidates, conf = swap_to_class(pool_probs, pool_y, int(c)), pool_conf
        pool_order = torch.argsort(conf, stable=True)
        sample_conf = probs[chosen, c]
        sample_order = torch.argsort(sample_conf, stable=True)
        n, m = len(chosen), len(pool_order)
        quantiles = ((torch.arange(n, dtype=torch.float64) + 0.5) / n * m).floor().long().clamp(max=m - 1)
        targets[chosen[sample_order]] = candidates[pool_order[quantiles]].to(targets.dtype)
    return targets


def nonmember_pool(scores: np.ndarray, threshold: float, margin_quantile: float) -> np.ndarray:
    """Positions of the reference samples the oracle judges non-members (``score < threshold``), without
    the ``margin_quantile`` fraction of them that score closest to the threshold (a safety margin)."""
    scores = np.asarray(scores, dtype=np.float64)
    below = np.flatnonzero(scores < threshold)
    if len(below) == 0 or margin_quantile <= 0:
        return below
    cut = np.quantile(scores[below], 1.0 - margin_quantile)
    kept = below[scores[below] <= cut]
    return kept if len(kept) else below


@torch.no_grad()
def fit_temperature(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Temperature scaling: the T of a log-spaced grid over [0.01, 100] minimising the NLL of softmax(T z)."""
    grid = torch.logspace(-2, 2, 81, dtype=torch.float64)
    z = logits.double()
    nll = torch.stack([nn.functional.cross_entropy(z * t, y) for t in grid])
    return float(grid[int(torch.argmin(nll))])


def class_mean_targets(probs: torch.Tensor, y_ref: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``K x K``: row c = mean confidence vector ``probs`` of the reference samples of class c.

    Classes absent from the reference set get the mean over the whole reference set.
    """
    probs = probs.double()
    overall = probs.mean(dim=0)
    rows = []
    for c in range(num_classes):
        chosen = probs[y_ref == c]
        rows.append(chosen.mean(dim=0) if len(chosen) else overall)
    return torch.stack(rows).float()


class ForgetTargets:
    """The forget set's targets ``t_i`` (``current``, ``N x K``) at the escalation level set last.

    ``base``: the targets at level 0; ``moving``: which forget samples move (module docstring).
    """

    def __init__(
        self,
        *,
        kind: str,
        target: str,
        forget_probs: torch.Tensor,
        y_forget: torch.Tensor,
        reference_probs: torch.Tensor,
        y_reference: torch.Tensor,
        num_classes: int,
        member_before: np.ndarray,
        reference_scores: Callable[[], np.ndarray],
        threshold: Callable[[], float],
        nonmember_margin: float,
    ) -> None:
        """``reference_scores()`` / ``threshold()``: the oracle's scores of the reference samples on the
        original model and its threshold, asked for only by rank targets with ``target="fr"``."""
        self.y_forget, self.reference_probs, self.y_reference = y_forget, reference_probs, y_reference
        self.num_classes, self.nonmember_margin = num_classes, nonmember_margin
        # (forget probs, movers, reference scores, threshold) when escalation deepens the non-member pool
        self._deepen: tuple[torch.Tensor, torch.Tensor, np.ndarray, float] | None = None
        device = y_forget.device
        if kind == "class-mean":
            means = class_mean_targets(reference_probs, y_reference, num_classes)[y_forget]
            self.base = means.to(forget_probs.dtype)
            self.moving = torch.ones(len(y_forget), dtype=torch.bool)
        else:
            pool = torch.arange(len(y_reference))
            if target == "fr":
                move = torch.as_tensor(member_before, device=device)
                scores = np.asarray(reference_scores(), dtype=np.float64)
                cut = float(threshold())
                chosen = nonmember_pool(scores, cut, nonmember_margin)
                if len(chosen):  # else: no never-seen sample is judged a non-member; match all of them
                    pool = torch.as_tensor(chosen, dtype=torch.long, device=device)
                    self._deepen = (forget_probs, move, scores, cut)
            else:
                move = torch.ones(len(y_forget), dtype=torch.bool, device=device)
            self.base = rank_matched_targets(
                forget_probs, y_forget, move, reference_probs[pool], y_reference[pool]
            )
            self.moving = move
        self.current = self.base

    @property
    def deepens(self) -> bool:
        """Whether escalation deepens the non-member pool (else it flattens towards uniform)."""
        return self._deepen is not None

    def at_level(self, level: float) -> None:
        """Set ``current`` to the targets at escalation level ``level`` (module docstring)."""
        if self._deepen is not None:
            forget_probs, move, scores, cut = self._deepen
            m0 = self.nonmember_margin
            margin = m0 + (1.0 - m0) * DEEPEST * level
            pool = torch.as_tensor(nonmember_pool(scores, cut, margin), dtype=torch.long, device=move.device)
            self.current = rank_matched_targets(
                forget_probs, self.y_forget, move, self.reference_probs[pool], self.y_reference[pool]
            )
            return
        uniform = torch.full_like(self.base, 1.0 / self.num_classes)
        self.current = (1.0 - level) * self.base + level * uniform

    def reset(self) -> None:
        """Back to level 0: ``current = base``."""
        self.current = self.base
