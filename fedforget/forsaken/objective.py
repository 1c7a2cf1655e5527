"""The objective J that each unlearning step lowers (``docs/forsaken.md``, The objective)::

    J(w) = L_forget(w) + (1 - e) (lambda_retain L_retain(w) + lambda_reference L_reference(w))
           [+ lambda_sparse S(m) while the generator trains]

* ``L_forget``: the KL divergence ``mean_i KL(t_i || softmax(T z_i))`` of the forget samples' confidence
  vectors to their targets ``t_i`` (:mod:`fedforget.forsaken.targets`), per-sample weighted by ``focus``
  after an accepted step with ``target="fr"``; or, with ``objective="hinge"``, the hinge
  ``mean_i relu(m(z_i, y_i) + delta)`` on the oracle's differentiable margin ``m``
  (:mod:`fedforget.forsaken.surrogate`). Divided by its value on the original model.
* ``L_retain``: the model's own loss (cross-entropy / hinge) on retained batches.
* ``L_reference``: ``KL(p_{w_0} || p_w)`` on the reference batches, in the same units as ``L_forget``.
* ``e``: the escalation level (:mod:`fedforget.forsaken.schedule`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from fedforget.forsaken.config import ForsakenConfig
from fedforget.forsaken.sets import Batch, Sets
from fedforget.forsaken.surrogate import MarginFunction, margin_function
from fedforget.forsaken.targets import ForgetTargets, fit_temperature
from fedforget.forsaken.weights import Weights, chunked

__all__ = ["EPS", "Objective", "kl_to_targets"]

EPS = 1e-12


def kl_to_targets(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """mean_i KL(t_i || softmax(z_i)) = mean_i sum_c t_ic (log t_ic - log p_ic)."""
    log_p = torch.log_softmax(logits, dim=1)
    return (targets * (torch.log(targets.clamp_min(EPS)) - log_p)).sum(dim=1).mean()


def _margin(config: ForsakenConfig, oracle: Any, model: nn.Module) -> MarginFunction | None:
    """The oracle's differentiable margin when the forget term is the hinge."""
    if config.objective == "kl" or (config.objective == "auto" and config.target != "fr"):
        return None
    margin = margin_function(oracle, model)
    if margin is None and config.objective == "hinge":
        raise ValueError(
            f"ForsakenConfig.objective='hinge' needs an oracle whose score is a function of the logits "
            f"(Shokri, loss threshold); {type(oracle).__name__} is not"
        )
    return margin


class Objective:
    """J's terms on batches, at any weights; holds the targets, the temperature and the level ``e``."""

    def __init__(
        self,
        *,
        config: ForsakenConfig,
        model: nn.Module,
        weights: Weights,
        sets: Sets,
        oracle: Any,
        member_before: np.ndarray,
        num_classes: int,
    ) -> None:
        """Measure the original ``model``'s confidence vectors, build the targets and scale L_forget."""
        from fedforget.models import criterion_for

        self.config, self.weights, self.sets = config, weights, sets
        self.criterion = criterion_for(model)
        self.level = 0.0
        """The escalation level e in [0, 1]."""
        self.focus: torch.Tensor | None = None  # per-sample forget weights, see refocus
        with torch.no_grad():
            ref_logits = chunked(weights.work, sets.xr)
            self.temperature = 1.0
            if getattr(model, "loss_name", "cross_entropy") != "cross_entropy":
                self.temperature = fit_temperature(ref_logits, sets.yr)
            self.reference_probs = torch.softmax(self.temperature * ref_logits, dim=1)
            # the original model's confidence vectors on the retained samples (the repair phase's anchor)
            self.retain_probs = torch.softmax(self.temperature * chunked(weights.work, sets.xk), dim=1)
            forget_probs = torch.softmax(self.temperature * chunked(weights.work, sets.xf), dim=1)
            self.targets = ForgetTargets(
                kind=config.targets,
                target=config.target,
                forget_probs=forget_probs,
                y_forget=sets.yf,
                reference_probs=self.reference_probs,
                y_reference=sets.yr,
                num_classes=num_classes,
                member_before=member_before,
                reference_scores=lambda: oracle.scores(model, *sets.reference_fit_np),
                threshold=lambda: oracle.threshold,
                nonmember_margin=config.nonmember_margin,
            )
            self.margin_fn = _margin(config, oracle, model)
            # the KL terms are measured relative to the forget term's value on the original model
            self.forget_scale = 1.0
            forget0 = self.forget_raw(chunked(weights.work, sets.xf), torch.arange(len(sets.yf)))
            self.forget_scale = max(float(forget0), 1e-6)

    def forget_raw(self, logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """L_forget before normalisation, on the forget samples ``index`` with ``logits``."""
        if self.margin_fn is not None:
            margins = self.margin_fn(logits, self.sets.yf[index])
            return torch.relu(margins + self.config.hinge_margin).mean()
        targets = self.targets.current
        # target="fr" after an accepted step: samples still judged members weigh 1, the others `focus`
        if self.focus is not None:
            log_p = torch.log_softmax(self.temperature * logits, dim=1)
            t = targets[index]
            per_sample = (t * (torch.log(t.clamp_min(EPS)) - log_p)).sum(dim=1)
            weights = self.focus[index]
            return (weights * per_sample).sum() / weights.sum().clamp_min(EPS)
        return kl_to_targets(self.temperature * logits, targets[index])

    def forget_term(self, logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """L_forget (normalised) on the forget samples ``index``."""
        return self.forget_raw(logits, index) / self.forget_scale

    def reference_term(self, logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """L_reference on the reference samples ``index`` (of R_fit) with ``logits``."""
        return kl_to_targets(self.temperature * logits, self.reference_probs[index]) / self.forget_scale

    def terms(self, params: Mapping[str, torch.Tensor], batch: Batch) -> dict[str, torch.Tensor]:
        """J's terms at ``params`` on ``batch``: forget, retain, reference (if lambda_reference > 0)."""
        sets, forward = self.sets, self.weights.forward
        forget_logits = forward(params, sets.xf[batch.forget])
        terms = {
            "forget": self.forget_term(forget_logits, batch.forget),
            "retain": self.criterion(forward(params, sets.xk[batch.retain]), sets.yk[batch.retain]),
        }
        if self.config.lambda_reference > 0:
            terms["reference"] = self.reference_term(
                forward(params, sets.xr[batch.reference]), batch.reference
            )
        return terms

    def keep(self, terms: Mapping[str, Any]) -> Any:
        """The accuracy-keeping part: (1 - e) (lambda_retain * retain + lambda_reference * reference)."""
        value = self.config.lambda_retain * terms["retain"]
        if "reference" in terms:
            value = value + self.config.lambda_reference * terms["reference"]
        return (1.0 - self.level) * value

    def total(self, terms: Mapping[str, Any]) -> Any:
        """J from its terms (tensors or floats); with a ``sparse`` term, ``+ lambda_sparse * sparse``."""
        value = terms["forget"] + self.keep(terms)
        if "sparse" in terms:
            value = value + self.config.lambda_sparse * terms["sparse"]
        return value

    @torch.no_grad()
    def values(self, params: Mapping[str, torch.Tensor], batch: Batch) -> dict[str, float]:
        """:meth:`terms` as floats (no gradients)."""
        return {k: float(v) for k, v in self.terms(params, batch).items()}

    def refocus(self, member: np.ndarray) -> None:
        """With ``target="fr"``, ``focus < 1`` and the KL forget term: per-sample weights follow the
        oracle's latest decisions ``member`` (1 for a sample judged a member, ``focus`` for a non-member)."""
        if self.config.target != "fr" or self.config.focus >= 1.0 or self.margin_fn is not None:
            return
        weights = np.where(member, 1.0, self.config.focus)
        self.focus = torch.as_tensor(weights, dtype=torch.float32, device=self.sets.xf.device)

    def escalate(self) -> None:
        """Raise e by ``escalation`` (at most 1) and move the targets to that level."""
        self.level = min(1.0, self.level + self.config.escalation)
        self.targets.at_level(self.level)

    def reset_level(self) -> None:
        """e = 0: the targets and the keep weight as at the start."""
        self.level = 0.0
        self.targets.reset()
