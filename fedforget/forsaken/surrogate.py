"""The membership oracle's decision margin as a differentiable function of the model's logits.

With ``target="fr"``, Forsaken's forget term is a hinge on the oracle's own decision: push every
forget sample below the oracle's threshold by a margin, and leave alone the samples that already are
(``docs/forsaken.md``, Objective). That needs the oracle's score as a differentiable function of the
logits ``z`` of one sample with label ``y``. :func:`margin_function` builds it for the oracles whose
score is a function of the logits alone, as a *margin* ``m(z, y) = g(score) - g(threshold)`` with
``g`` increasing (so ``m >= 0`` exactly when the oracle decides "member"):

* :class:`fedforget.mia.shokri.ShokriOracle` (duck-typed: ``global_net``, ``class_nets``, ``mean``,
  ``std``): the 13 attack features of :mod:`fedforget.mia.features` recomputed in torch (sorted
  posterior, loss, ``p_y``, ``phi``), standardised, through the attack network(s); ``g`` = logit, so
  ``m`` = attack-network output minus ``logit(threshold)``;
* :class:`fedforget.forsaken.oracle.LossThresholdOracle` (score ``exp(-loss)``): for cross-entropy
  ``exp(-loss) = p_y``, and ``g`` = logit gives ``m = phi - logit(threshold)`` (``phi`` does not
  saturate where ``p_y`` is close to 1, the loss's gradient does); for the hinge-loss SVM ``g`` = log,
  ``m = -loss - log(threshold)``.

Other oracles (LiRA, whose score also depends on the shadow models' outputs on ``x``; or any duck-typed
oracle) get ``None``: Forsaken then uses the confidence-vector targets (:mod:`.targets`) instead.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

__all__ = ["MarginFunction", "margin_function"]

MarginFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``(logits N x K, labels N) -> margins N`` (>= 0: judged a member)."""

_TOP_K = 10
_PHI_CLIP = 50.0
_LOGIT_CLIP = 1e-6


def _logit(p: float) -> float:
    p = min(max(float(p), _LOGIT_CLIP), 1.0 - _LOGIT_CLIP)
    return math.log(p / (1.0 - p))


def attack_features(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The ``N x 13`` attack features of :func:`fedforget.mia.features.features_from_logits`, in torch
    (float64, differentiable): sorted posterior (top 10, zero-padded), loss, ``p_y``, ``phi``."""
    z = logits.double()
    log_p = torch.log_softmax(z, dim=1)
    probs = log_p.exp()
    rows = torch.arange(len(y), device=z.device)
    k = min(z.shape[1], _TOP_K)
    top = torch.sort(probs, dim=1, descending=True).values[:, :k]
    if k < _TOP_K:
        top = torch.cat([top, top.new_zeros(len(z), _TOP_K - k)], dim=1)
    others = z.masked_fill(nn.functional.one_hot(y, z.shape[1]).bool(), -math.inf)
    phi = (z[rows, y] - torch.logsumexp(others, dim=1)).clamp(-_PHI_CLIP, _PHI_CLIP)
    return torch.cat([top, -log_p[rows, y, None], probs[rows, y, None], phi[:, None]], dim=1)


def _shokri(oracle: Any) -> MarginFunction:
    mean = torch.as_tensor(oracle.mean, dtype=torch.float64)
    std = torch.as_tensor(oracle.std, dtype=torch.float64)
    offset = _logit(oracle.threshold)
    # copies: the oracle's own networks are left as they are (requires_grad, device)
    nets: dict[Any, nn.Module] = {"global": copy.deepcopy(oracle.global_net).double().eval()}
    nets.update({c: copy.deepcopy(n).double().eval() for c, n in oracle.class_nets.items()})
    for net in nets.values():
        for p in net.parameters():
            p.requires_grad_(False)

    def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        feats = (attack_features(logits, y) - mean.to(logits.device)) / std.to(logits.device)
        out = nets["global"].to(logits.device)(feats).squeeze(1)
        for c, net in nets.items():
            if c == "global":
                continue
            rows = y == c
            if bool(rows.any()):
                out = torch.where(rows, net.to(logits.device)(feats).squeeze(1), out)
        return (out - offset).float()

    return margin


def _loss_threshold(oracle: Any, criterion: nn.Module | None) -> MarginFunction:
    if criterion is None:  # cross-entropy: exp(-loss) = p_y >= t  <=>  phi = logit(p_y) >= logit(t)
        offset = _logit(oracle.threshold)

        def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return (attack_features(logits, y)[:, _TOP_K + 2] - offset).float()

        return margin
    log_threshold = math.log(max(float(oracle.threshold), 1e-300))

    def hinge_margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return -criterion(logits, y) - log_threshold

    return hinge_margin


def margin_function(oracle: Any, model: nn.Module) -> MarginFunction | None:
    """The oracle's differentiable decision margin (see the module docstring), or None when unknown."""
    from fedforget.forsaken.oracle import LossThresholdOracle
    from fedforget.models import criterion_for

    if isinstance(oracle, LossThresholdOracle):
        if getattr(model, "loss_name", "cross_entropy") == "cross_entropy":
            return _loss_threshold(oracle, None)
        criterion = criterion_for(model)
        criterion.reduction = "none"
        return _loss_threshold(oracle, criterion)
    if all(hasattr(oracle, a) for a in ("global_net", "class_nets", "mean", "std")) and isinstance(
        oracle.global_net, nn.Module
    ):
        if len(getattr(oracle, "mean", ())) != 13:
            return None
        return _shokri(oracle)
    return None
