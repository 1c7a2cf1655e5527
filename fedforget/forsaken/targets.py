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
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["MIN_POOL", "rank_matched_targets", "swap_to_class"]

MIN_POOL = 3
"""A class needs this many pool vectors of its own; below, the all-class swapped pool is used."""


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
