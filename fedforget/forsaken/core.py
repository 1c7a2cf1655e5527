"""Forsaken unlearning: a trained mask gradient generator stimulates neurons to forget (docs/forsaken.md)."""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call
from tqdm.auto import tqdm

from fedforget.forsaken.config import ForsakenConfig
from fedforget.forsaken.generator import MaskGenerator
from fedforget.forsaken.neurons import ActivationRecorder, Layer, find_layers, neuron_features
from fedforget.forsaken.oracle import LossThresholdOracle, auc, check_oracle, forgetting_rate
from fedforget.forsaken.surrogate import MarginFunction, margin_function
from fedforget.forsaken.targets import nonmember_pool, rank_matched_targets

__all__ = ["ForsakenResult", "apply_mask", "unlearn"]

_EPS = 1e-12
_SEED_BATCHES = 101  # decorrelates the batch-order stream from the generator's initial weights
_PROGRESS = 0.05  # a step makes progress when the forget term falls by this fraction of its best value
_CHUNK = 512  # samples per forward pass when a whole set is evaluated
_SEED_SPLIT = 211  # seeds the fit / check split of the reference set
_MIN_SPLIT = 6  # smallest reference set that is split
Pair = tuple[np.ndarray, np.ndarray]


@dataclasses.dataclass(eq=False)
class ForsakenResult:
    """What :func:`unlearn` produced."""

    mask: dict[str, torch.Tensor]
    """Parameter name -> delta (unlearned - original); every parameter of the model, zero where untouched."""
    model: nn.Module
    """The unlearned model: a copy, ``apply_mask(original, mask)``."""
    history: list[dict[str, Any]]
    """One row per step (step 0 = the original model); see ``docs/forsaken.md`` for the columns."""
    stopped_because: str
    """``target-fr``, ``target-auc``, ``max-steps``, ``stalled`` or ``nothing-to-forget``."""
    neurons_touched: int
    """Neurons (see :mod:`fedforget.forsaken.neurons`) with a non-zero entry in the mask."""
    num_neurons: int
    generator: MaskGenerator
    oracle: Any
    """The oracle that judged the stopping rule (the given one, or the fitted proxy)."""
    seconds: float
    best_step: int = -1
    """The step whose state ``mask``, ``model`` and ``final`` are: the accepted step with the highest FR
    (``target="fr"``) or the AUC closest to 0.5 (``"retrain"``), the latest of equals; -1 = the last row."""

    @property
    def touched_fraction(self) -> float:
        """Fraction of the model's neurons the mask changes."""
        return self.neurons_touched / self.num_neurons if self.num_neurons else 0.0

    @property
    def steps(self) -> int:
        """Unlearning steps applied (accepted) in the returned state (up to ``best_step``)."""
        rows = self.history[1:] if self.best_step < 0 else self.history[1 : self.best_step + 1]
        return sum(1 for row in rows if row["accepted"])

    @property
    def final(self) -> dict[str, Any]:
        """The history row of the returned model (its measurements): ``history[best_step]``."""
        return self.history[self.best_step]


# ------------------------------------------------------------------------------------------ checks
def _as_pair(name: str, pair: Any) -> Pair:
    if not isinstance(pair, tuple | list) or len(pair) != 2:
        raise TypeError(f"{name} must be a pair (x, y) of arrays, got {type(pair).__name__}")
    x, y = pair
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    if isinstance(y, torch.Tensor):
        y = y.detach().cpu().numpy()
    x, y = np.asarray(x), np.asarray(y)
    if x.dtype.kind not in "fiub":
        raise TypeError(f"{name}: x must be numeric, got dtype {x.dtype}")
    if x.ndim < 2:
        raise ValueError(f"{name}: x must be a batch N x features..., got shape {x.shape}")
    if len(x) == 0:
        raise ValueError(f"{name} is empty (0 samples)")
    if y.ndim != 1:
        raise ValueError(f"{name}: y must be a 1-D array of labels, got shape {y.shape}")
    if len(x) != len(y):
        raise ValueError(f"{name}: {len(x)} samples but {len(y)} labels")
    if y.dtype.kind not in "iu":
        if y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        else:
            raise ValueError(f"{name}: labels must be integers, got dtype {y.dtype}")
    x = x.astype(np.float32, copy=False)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name}: x contains NaN or infinite values")
    y = y.astype(np.int64, copy=False)
    # torch cannot share memory with read-only arrays (cached datasets are read-only)
    return (x if x.flags.writeable else x.copy()), (y if y.flags.writeable else y.copy())


def _num_classes(model: nn.Module, name: str, x: np.ndarray, device: torch.device) -> int:
    expected = getattr(model, "input_shape", None)
    if expected is not None and tuple(x.shape[1:]) != tuple(expected):
        raise ValueError(
            f"{name}: samples have shape {tuple(x.shape[1:])} but the model ({type(model).__name__}) expects "
            f"{tuple(expected)}"
        )
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.as_tensor(x[:2], device=device))
    except RuntimeError as error:
        raise ValueError(
            f"{name}: samples of shape {tuple(x.shape[1:])} do not fit the model "
            f"({type(model).__name__}): {error}"
        ) from error
    finally:
        model.train(was_training)
    if out.dim() != 2 or out.shape[1] < 2:
        raise ValueError(
            f"the model must output N x num_classes scores (>= 2 classes), got {tuple(out.shape)}"
        )
    return int(out.shape[1])


def _check_labels(name: str, y: np.ndarray, num_classes: int) -> None:
    if y.min() < 0 or y.max() >= num_classes:
        bad = int(y.min()) if y.min() < 0 else int(y.max())
        raise ValueError(
            f"{name}: label {bad} is outside [0, {num_classes}) of the model's {num_classes} outputs"
        )


# ------------------------------------------------------------------------------------------ helpers
def _device(model: nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration as error:
        raise ValueError(f"{type(model).__name__} has no parameters to unlearn") from error


def _chunked(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)`` evaluated ``_CHUNK`` samples at a time."""
    return torch.cat([module(x[b : b + _CHUNK]) for b in range(0, len(x), _CHUNK)])


def _kl_to_targets(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """mean_i KL(t_i || softmax(z_i)) = mean_i sum_c t_ic (log t_ic - log p_ic)."""
    log_p = torch.log_softmax(logits, dim=1)
    return (targets * (torch.log(targets.clamp_min(_EPS)) - log_p)).sum(dim=1).mean()


@torch.no_grad()
def _fit_temperature(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Temperature scaling: the T of a log-spaced grid over [0.01, 100] minimising the NLL of softmax(T z)."""
    grid = torch.logspace(-2, 2, 81, dtype=torch.float64)
    z = logits.double()
    nll = torch.stack([nn.functional.cross_entropy(z * t, y) for t in grid])
    return float(grid[int(torch.argmin(nll))])


def _class_targets(probs: torch.Tensor, y_ref: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``K x K``: row c = mean softmax of the original model on reference samples of class c.

    Classes absent from the reference set get the mean over the whole reference set.
    """
    probs = probs.double()
    overall = probs.mean(dim=0)
    rows = []
    for c in range(num_classes):
        chosen = probs[y_ref == c]
        rows.append(chosen.mean(dim=0) if len(chosen) else overall)
    return torch.stack(rows).float()


@dataclasses.dataclass(frozen=True)
class _Batch:
    forget: torch.Tensor
    retain: torch.Tensor
    reference: torch.Tensor


class _Batches:
    """Seeded, endless stream of index batches over ``n`` samples (reshuffled at each pass)."""

    def __init__(self, n: int, size: int, generator: torch.Generator) -> None:
        self.n, self.size, self.generator = n, min(size, n), generator
        self.queue: list[torch.Tensor] = []

    def next(self) -> torch.Tensor:
        if not self.queue:
            order = torch.randperm(self.n, generator=self.generator)
            whole = self.n // self.size * self.size
            self.queue = list(order[:whole].split(self.size)) if whole else [order]
        return self.queue.pop(0)


# --------------------------------------------------------------------------------------------- core
_DEEPEST = 0.9  # at full escalation, the pool is the 10 % of the judged non-members scoring lowest
_STATS = ("forget_acc", "retain_acc", "reference_acc", "member_fraction", "fr", "auc")
GUARDED = ("retain_acc", "reference_acc")
"""The accuracies the guard (``max_accuracy_drop``) watches; the keys of ``accuracy_baseline``."""
_MAX_MEASURE = 1024  # held-out retained samples (retain accuracy), reference samples (AUC) measured per step


class _Unlearner:
    def __init__(
        self,
        model: nn.Module,
        forget: Pair,
        reference: Pair,
        retain: Pair,
        config: ForsakenConfig,
        oracle: Any,
        num_classes: int,
        accuracy_baseline: Mapping[str, float] | None = None,
    ) -> None:
        from fedforget.models import criterion_for

        self.config = config
        self.original = model
        self.accuracy_baseline = dict(accuracy_baseline) if accuracy_baseline is not None else None
        self.device = _device(model)
        self.work = copy.deepcopy(model).eval()  # eval mode: BatchNorm running statistics stay frozen
        self.layers: list[Layer] = find_layers(self.work)
        for p in self.work.parameters():
            p.requires_grad_(False)
        self.masked = [name for layer in self.layers for name in layer.params]
        self.base = {n: p.detach().clone() for n, p in self.work.named_parameters()}
        self.delta = {n: torch.zeros_like(p) for n, p in self.base.items()}
        self.criterion = criterion_for(model)
        self.forget_np = forget

        def t(pair: Pair) -> tuple[torch.Tensor, torch.Tensor]:
            return torch.as_tensor(pair[0], device=self.device), torch.as_tensor(pair[1], device=self.device)

        self.xf, self.yf = t(forget)
        # the reference set is split (seeded): two thirds "fit" the targets and the reference term, one
        # third "checks" the accuracy guard on data the objective never sees (all of it when < 6 samples)
        order = torch.randperm(
            len(reference[1]), generator=torch.Generator().manual_seed(config.seed + _SEED_SPLIT)
        )
        num_check = len(order) // 3 if len(order) >= _MIN_SPLIT else 0
        fit, check = (order[num_check:], order[:num_check]) if num_check else (order, order)
        # the per-step AUC is measured on up to _MAX_MEASURE reference samples (R_check first)
        auc_part = order[:_MAX_MEASURE].numpy()
        self.reference_np = (reference[0][auc_part], reference[1][auc_part])
        xr, yr = t(reference)
        self.xr, self.yr = xr[fit.to(self.device)], yr[fit.to(self.device)]
        self.xc, self.yc = xr[check.to(self.device)], yr[check.to(self.device)]
        # the retained samples are split the same way: the retain term fits on two thirds, the guard
        # measures the other third (the retain term drives the accuracy on its own samples *up*)
        xk, yk = t(retain)
        order_k = torch.randperm(
            len(retain[1]), generator=torch.Generator().manual_seed(config.seed + _SEED_SPLIT + 1)
        )
        num_check_k = len(order_k) // 3 if len(order_k) >= _MIN_SPLIT else 0
        fit_k, check_k = (order_k[num_check_k:], order_k[:num_check_k]) if num_check_k else (order_k, order_k)
        self.xk, self.yk = xk[fit_k.to(self.device)], yk[fit_k.to(self.device)]
        self.xkc, self.ykc = xk[check_k.to(self.device)], yk[check_k.to(self.device)]
        self.num_classes = num_classes
        self.oracle = oracle if oracle is not None else LossThresholdOracle.fit(model, retain, reference)
        # what the oracle judges: a plain module holding the current weights
        self.snapshot = copy.deepcopy(self.work)
        self.member_before = np.asarray(self.oracle.decide(model, *forget), dtype=bool)
        with torch.no_grad():
            ref_logits = _chunked(self.work, self.xr)
            # confidence vectors: softmax(T z); T = 1 for cross-entropy models, fitted on the reference
            # set for the others (a hinge-loss SVM's scores are margins, not log-probabilities)
            self.temperature = 1.0
            if getattr(model, "loss_name", "cross_entropy") != "cross_entropy":
                self.temperature = _fit_temperature(ref_logits, self.yr)
            self.reference_probs = torch.softmax(self.temperature * ref_logits, dim=1)
            # the original model's confidence vectors on the retained samples (the repair phase's anchor)
            self.retain_probs = torch.softmax(self.temperature * _chunked(self.work, self.xk), dim=1)
            forget_probs = torch.softmax(self.temperature * _chunked(self.work, self.xf), dim=1)
            # (forget probs, movers, reference scores) when the escalation deepens the non-member pool
            self.deepen: tuple[torch.Tensor, torch.Tensor, np.ndarray] | None = None
            self.base_targets, self.moving = self._targets(forget_probs, reference, fit)
            self.targets = self.base_targets
            # the KL terms are measured relative to the forget term's value on the original model
            self.margin_fn = self._margin_function(model)
            self.focus: torch.Tensor | None = None  # per-sample forget weights, see refocus
            self.forget_scale = 1.0
            forget0 = self.forget_raw(_chunked(self.work, self.xf), torch.arange(len(self.yf)))
            self.forget_scale = max(float(forget0), 1e-6)
        self.flatten = 0.0
        self.targets = self.base_targets
        rng = torch.Generator().manual_seed(config.seed * 1000 + _SEED_BATCHES)
        self.forget_batches = _Batches(len(self.yf), config.batch_size, rng)
        self.reference_batches = _Batches(len(self.yr), config.batch_size, rng)
        self.retain_batches = _Batches(len(self.yk), config.batch_size, rng)
        self.generator = MaskGenerator.seeded(config.seed, hidden=config.generator_hidden).to(self.device)
        self.optimizer = torch.optim.Adam(self.generator.parameters(), lr=config.generator_lr)
        self.eta = config.step_size
        self.guard_blocked = False  # since the last repair: a helpful step was refused as too far

    def _targets(
        self, forget_probs: torch.Tensor, reference: Pair, fit: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The forget set's targets (``N x K``) and which samples move (``docs/forsaken.md``, Targets)."""
        config = self.config
        if config.targets == "class-mean":
            targets = _class_targets(self.reference_probs, self.yr, self.num_classes)[self.yf]
            return targets.to(forget_probs.dtype), torch.ones(len(self.yf), dtype=torch.bool)
        pool = torch.arange(len(self.yr))
        if config.target == "fr":
            move = torch.as_tensor(self.member_before, device=self.device)
            fit_np = fit.cpu().numpy()
            scores = np.asarray(
                self.oracle.scores(self.original, reference[0][fit_np], reference[1][fit_np]),
                dtype=np.float64,
            )
            chosen = nonmember_pool(scores, float(self.oracle.threshold), config.nonmember_margin)
            if len(chosen):  # else: no never-seen sample is judged a non-member; match all of them
                pool = torch.as_tensor(chosen, dtype=torch.long, device=self.device)
                self.deepen = (forget_probs, move, scores)
        else:
            move = torch.ones(len(self.yf), dtype=torch.bool, device=self.device)
        targets = rank_matched_targets(forget_probs, self.yf, move, self.reference_probs[pool], self.yr[pool])
        return targets, move

    def _margin_function(self, model: nn.Module) -> MarginFunction | None:
        """The oracle's differentiable margin when the forget term is the hinge (see ``objective``)."""
        config = self.config
        if config.objective == "kl" or (config.objective == "auto" and config.target != "fr"):
            return None
        margin = margin_function(self.oracle, model)
        if margin is None and config.objective == "hinge":
            raise ValueError(
                f"ForsakenConfig.objective='hinge' needs an oracle whose score is a function of the logits "
                f"(Shokri, loss threshold); {type(self.oracle).__name__} is not"
            )
        return margin

    def forget_raw(self, logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """The forget term before normalisation, on the forget samples ``index`` with ``logits``:
        the hinge ``mean_i relu(m(z_i, y_i) + delta)`` on the oracle's margin, or the KL to the targets."""
        if self.margin_fn is not None:
            margins = self.margin_fn(logits, self.yf[index])
            return torch.relu(margins + self.config.hinge_margin).mean()
        # target="fr" after an accepted step: samples still judged members weigh 1, the others `focus`
        if self.focus is not None:
            log_p = torch.log_softmax(self.temperature * logits, dim=1)
            t = self.targets[index]
            per_sample = (t * (torch.log(t.clamp_min(_EPS)) - log_p)).sum(dim=1)
            weights = self.focus[index]
            return (weights * per_sample).sum() / weights.sum().clamp_min(_EPS)
        return _kl_to_targets(self.temperature * logits, self.targets[index])

    # ---- model evaluation
    def params(self) -> dict[str, torch.Tensor]:
        return {n: self.base[n] + self.delta[n] for n in self.base}

    def forward(self, params: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.work, dict(params), (x,))

    def objective(self, params: Mapping[str, torch.Tensor], batch: _Batch) -> dict[str, torch.Tensor]:
        """The terms of J: forget (KL to the targets), retain (criterion), reference (KL to the original)."""
        forget_logits = self.forward(params, self.xf[batch.forget])
        terms = {
            "forget": self.forget_raw(forget_logits, batch.forget) / self.forget_scale,
            "retain": self.criterion(self.forward(params, self.xk[batch.retain]), self.yk[batch.retain]),
        }
        if self.config.lambda_reference > 0:
            logits = self.forward(params, self.xr[batch.reference])
            terms["reference"] = (
                _kl_to_targets(self.temperature * logits, self.reference_probs[batch.reference])
                / self.forget_scale
            )
        return terms

    def keep(self, terms: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The accuracy-keeping terms: (1 - e) (lambda_retain * retain + lambda_reference * reference)."""
        value = self.config.lambda_retain * terms["retain"]
        if "reference" in terms:
            value = value + self.config.lambda_reference * terms["reference"]
        return (1.0 - self.flatten) * value

    def total(self, terms: Mapping[str, torch.Tensor]) -> torch.Tensor:
        value = terms["forget"] + self.keep(terms)
        if "sparse" in terms:
            value = value + self.config.lambda_sparse * terms["sparse"]
        return value

    # ---- one step's inputs to the generator
    def features(
        self, batch: _Batch
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Per-neuron features, and the forgetting / repair directions at the current weights."""
        current = self.params()
        leaves = {n: current[n].clone().requires_grad_(n in self.masked) for n in current}
        masked = [leaves[n] for n in self.masked]
        recorder = ActivationRecorder(self.layers)
        forget_logits = self.forward(leaves, self.xf[batch.forget])
        act_forget = {k: v.mean(dim=0) for k, v in recorder.close().items()}
        forget_term = self.forget_raw(forget_logits, batch.forget) / self.forget_scale
        grad_forget = dict(zip(self.masked, torch.autograd.grad(forget_term, masked), strict=True))
        recorder = ActivationRecorder(self.layers)
        terms = {"retain": self.criterion(self.forward(leaves, self.xk[batch.retain]), self.yk[batch.retain])}
        logits_ref = self.forward(leaves, self.xr[batch.reference])
        act = recorder.close()
        act_reference = {k: (v.mean(dim=0), v.std(dim=0, unbiased=False)) for k, v in act.items()}
        if self.config.lambda_reference > 0:
            terms["reference"] = (
                _kl_to_targets(self.temperature * logits_ref, self.reference_probs[batch.reference])
                / self.forget_scale
            )
        keep = self.keep(terms)
        grads = (
            torch.autograd.grad(keep, masked, allow_unused=True)
            if keep.requires_grad
            else [None] * len(masked)
        )
        grad_keep = {
            n: torch.zeros_like(current[n]) if g is None else g
            for n, g in zip(self.masked, grads, strict=True)
        }
        features = neuron_features(self.layers, current, grad_forget, grad_keep, act_forget, act_reference)
        # both directions use the layer's forgetting scale: RMS(forget direction) = RMS(layer parameters)
        forget_dir: dict[str, torch.Tensor] = {}
        keep_dir: dict[str, torch.Tensor] = {}
        for layer in self.layers:
            w = torch.cat([current[n].reshape(-1) for n in layer.params])
            g = torch.cat([grad_forget[n].reshape(-1) for n in layer.params])
            scale = max(float(w.pow(2).mean().sqrt()), 1e-3) / (float(g.pow(2).mean().sqrt()) + _EPS)
            for n in layer.params:
                forget_dir[n] = -grad_forget[n] * scale
                keep_dir[n] = -grad_keep[n] * scale
        return features, forget_dir, keep_dir

    def mask_from_gates(
        self,
        gates: torch.Tensor,
        forget_dir: Mapping[str, torch.Tensor],
        keep_dir: Mapping[str, torch.Tensor],
        eta: float,
    ) -> dict[str, torch.Tensor]:
        """m_p = eta * (a_j * D^f_p + b_j * D^k_p) for every parameter p of neuron j."""
        mask: dict[str, torch.Tensor] = {}
        start = 0
        for layer in self.layers:
            a = gates[start : start + layer.num_neurons, 0]
            b = gates[start : start + layer.num_neurons, 1]
            start += layer.num_neurons
            for n in layer.params:
                shape = (-1, *([1] * (forget_dir[n].dim() - 1)))
                mask[n] = eta * (a.reshape(shape) * forget_dir[n] + b.reshape(shape) * keep_dir[n])
        return mask

    def sparse_term(
        self, mask: Mapping[str, torch.Tensor], forget_dir: Mapping[str, torch.Tensor]
    ) -> torch.Tensor:
        """||m||_1 / (eta * ||D^f||_1): 1 for the mask with every forget gate at 1 and no repair."""
        full = sum(float(forget_dir[n].abs().sum()) for n in self.masked) * self.eta
        return sum(mask[n].abs().sum() for n in self.masked) / (full + _EPS)

    # ---- measurements and stopping
    def measure(self) -> dict[str, Any]:
        with torch.no_grad():
            for n, p in self.snapshot.named_parameters():
                p.copy_(self.base[n] + self.delta[n])
            self.snapshot.eval()

            def accuracy(x: torch.Tensor, y: torch.Tensor) -> float:
                return float((_chunked(self.snapshot, x).argmax(1) == y).float().mean())

            forget_acc = accuracy(self.xf, self.yf)
            retain_acc = accuracy(self.xkc[:_MAX_MEASURE], self.ykc[:_MAX_MEASURE])
            reference_acc = accuracy(self.xc, self.yc)
        scores_f = np.asarray(self.oracle.scores(self.snapshot, *self.forget_np), dtype=np.float64)
        scores_r = np.asarray(self.oracle.scores(self.snapshot, *self.reference_np), dtype=np.float64)
        member_after = scores_f >= self.oracle.threshold
        self.last_member = member_after
        return {
            "forget_acc": forget_acc,
            "retain_acc": retain_acc,
            "reference_acc": reference_acc,
            "member_fraction": float(member_after.mean()),
            "fr": forgetting_rate(self.member_before, member_after),
            "auc": auc(scores_f, scores_r),
        }

    def refocus(self) -> None:
        """With ``target="fr"`` and ``focus < 1``: the forget term's per-sample weights follow the oracle's
        latest decisions (1 for a sample judged a member, ``focus`` for one judged a non-member)."""
        if self.config.target != "fr" or self.config.focus >= 1.0 or self.margin_fn is not None:
            return
        weights = np.where(self.last_member, 1.0, self.config.focus)
        self.focus = torch.as_tensor(weights, dtype=torch.float32, device=self.device)

    def judged(self, row: Mapping[str, Any]) -> float:
        """What the best state maximises: FR (``target="fr"``), or -|AUC - 0.5| (``"retrain"``)."""
        return float(row["fr"]) if self.config.target == "fr" else -abs(float(row["auc"]) - 0.5)

    def reached(self, row: Mapping[str, Any]) -> str | None:
        config = self.config
        if config.target == "fr":
            if not self.member_before.any():
                return "nothing-to-forget"
            return "target-fr" if row["fr"] >= config.target_fr - 1e-12 else None
        return "target-auc" if abs(row["auc"] - 0.5) <= config.auc_tolerance + 1e-12 else None

    def too_far(self, row: Mapping[str, Any]) -> bool:
        """Whether a step went too far: the retained or reference accuracy fell more than
        ``max_accuracy_drop`` below the original model's, or (target="retrain") the forget set now looks
        *less* member-like than never-seen data (AUC below 0.5 - tolerance)."""
        config, start = self.config, self.guard
        # at least one sample of slack: on fewer than 1 / max_accuracy_drop samples a single flipped
        # prediction would exceed the budget and the guard would forbid every change
        n_retain, n_reference = min(len(self.ykc), _MAX_MEASURE), len(self.yc)
        if row["retain_acc"] < start["retain_acc"] - max(config.max_accuracy_drop, 1 / n_retain) - 1e-12:
            return True
        if (
            row["reference_acc"]
            < start["reference_acc"] - max(config.max_accuracy_drop, 1 / n_reference) - 1e-12
        ):
            return True
        return config.target == "retrain" and row["auc"] < 0.5 - config.auc_tolerance

    def _slack(self, row: Mapping[str, Any]) -> float:
        """How far the guarded accuracies are above their floors (the smaller of the two)."""
        return min(float(row[key]) - self.guard[key] for key in GUARDED)

    def escalate(self) -> None:
        """Raise the escalation level e by ``escalation``; the keep terms are weighted ``(1 - e)``.

        The targets go further from the threshold. Rank targets of ``target="fr"``: the pool becomes the
        non-members scoring lowest, leaving out the fraction ``m_e = m_0 + 0.9 e (1 - m_0)`` closest to
        the threshold (``m_0 = nonmember_margin``). Otherwise (class-mean targets, ``target="retrain"``,
        or no reference sample judged a non-member): towards the uniform vector, ``(1 - e) t + e / K``.
        """
        self.flatten = min(1.0, self.flatten + self.config.escalation)
        if self.deepen is not None:
            forget_probs, move, scores = self.deepen
            m0 = self.config.nonmember_margin
            margin = m0 + (1.0 - m0) * _DEEPEST * self.flatten
            chosen = nonmember_pool(scores, float(self.oracle.threshold), margin)
            pool = torch.as_tensor(chosen, dtype=torch.long, device=self.device)
            self.targets = rank_matched_targets(
                forget_probs, self.yf, move, self.reference_probs[pool], self.yr[pool]
            )
            return
        uniform = torch.full_like(self.base_targets, 1.0 / self.num_classes)
        self.targets = (1.0 - self.flatten) * self.base_targets + self.flatten * uniform

    def next_batch(self) -> _Batch:
        return _Batch(self.forget_batches.next(), self.retain_batches.next(), self.reference_batches.next())

    # ---- one unlearning step
    def train_generator(
        self, features: torch.Tensor, forget_dir: dict, keep_dir: dict, batch: _Batch
    ) -> None:
        """Several Adam updates of the generator, differentiating J through the applied step w + m(theta)."""
        current = self.params()
        self.generator.train()
        for _ in range(self.config.inner_updates):
            mask = self.mask_from_gates(self.generator(features), forget_dir, keep_dir, self.eta)
            trial = {n: current[n] + mask[n] if n in mask else current[n] for n in current}
            terms = self.objective(trial, batch)
            terms["sparse"] = self.sparse_term(mask, forget_dir)
            loss = self.total(terms)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        self.generator.eval()

    @torch.no_grad()
    def try_step(
        self, gates: torch.Tensor, forget_dir: dict, keep_dir: dict, held_out: _Batch
    ) -> tuple[bool, float, dict[str, float], dict[str, Any] | None, float]:
        """Line search on the generated step over the scales ``max_scale, max_scale / 2, ...`` down to
        ``2^-max_backtracks``, from the largest: a scale *helps* when J and the forget term both fall on
        held-out batches; the scan stops once a helpful scale is followed by one with a higher J (past
        the minimum along the direction). The helpful scale with the lowest J is applied unless it goes
        too far; then the smaller scales are tried in turn. Returns (accepted, scale, terms,
        measurements, sparse)."""
        current = self.params()
        before = {k: float(v) for k, v in self.objective(current, held_out).items()}
        before_total = float(self.total(before))
        scales, scale = [], float(self.config.max_scale)
        while scale >= 2.0**-self.config.max_backtracks - 1e-12:
            scales.append(scale)
            scale /= 2

        def evaluate(scale: float) -> tuple[float, dict[str, float], dict[str, torch.Tensor]] | None:
            mask = self.mask_from_gates(gates, forget_dir, keep_dir, self.eta * scale)
            trial = {n: current[n] + mask[n] if n in mask else current[n] for n in current}
            after = {k: float(v) for k, v in self.objective(trial, held_out).items()}
            total = float(self.total(after))
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
            return False, 0.0, before, None, 0.0
        for i in range(best, len(scales)):
            candidate = found.get(i) if i in found else evaluate(scales[i])
            if candidate is None:
                continue
            _, after, mask = candidate
            for n, m in mask.items():
                self.delta[n] = self.delta[n] + m
            measured = self.measure()
            if not self.too_far(measured):
                self.refocus()
                return True, scales[i], after, measured, float(self.sparse_term(mask, forget_dir))
            self.guard_blocked = True  # a step that helped went too far: the accuracy budget binds
            for n, m in mask.items():  # undo, try the next smaller scale
                self.delta[n] = self.delta[n] - m
        return False, 0.0, before, None, 0.0

    def repair(self) -> None:
        """The repair phase: ``repair_steps`` Adam steps on the masked parameters' change ``M``, minimising

            L_repair(w) = KL-mean_{B_k}( p_{w_0} || p_w ) + KL-mean_{B_r}( p_{w_0} || p_w )
                          + KL-mean_{F}( p_{w_a} || p_w ),

        on fresh batches each step, with ``w_a`` the weights at the start of the phase: the model is
        pulled back to the original model's confidence vectors on retained and never-seen data (which
        wins back accuracy without fitting the client's own label distribution, as the cross-entropy
        would), while the forget set's confidence vectors stay where forgetting left them. Adam's
        learning rate for a tensor is ``repair_lr * RMS(tensor in w_0)``. The caller keeps the result
        only if it raised the guarded accuracies' slack; then the escalation is reset."""
        config = self.config
        with torch.no_grad():
            anchor = torch.softmax(self.temperature * self.forward(self.params(), self.xf), dim=1)
        deltas = {n: self.delta[n].clone().requires_grad_() for n in self.masked}
        # Adam moves every weight by about its learning rate: scale it to each tensor's RMS
        groups = [
            {"params": [d], "lr": config.repair_lr * max(float(self.base[n].pow(2).mean().sqrt()), 1e-3)}
            for n, d in deltas.items()
        ]
        optimizer = torch.optim.Adam(groups)
        for _ in range(config.repair_steps):
            batch = self.next_batch()
            params = {n: self.base[n] + (deltas[n] if n in deltas else self.delta[n]) for n in self.base}
            logits_k = self.forward(params, self.xk[batch.retain])
            logits_f = self.forward(params, self.xf[batch.forget])
            logits_r = self.forward(params, self.xr[batch.reference])
            loss = (
                _kl_to_targets(self.temperature * logits_k, self.retain_probs[batch.retain])
                + _kl_to_targets(self.temperature * logits_r, self.reference_probs[batch.reference])
                + _kl_to_targets(self.temperature * logits_f, anchor[batch.forget])
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        for n, d in deltas.items():
            self.delta[n] = d.detach().clone()
        self.flatten = 0.0
        self.targets = self.base_targets
        self.eta = config.step_size

    def repaired_row(
        self, row: Mapping[str, Any], step: int, held_out: _Batch, start: float
    ) -> dict[str, Any] | None:
        """Run a repair phase after ``row``; its history row (``repair = True``), or ``None`` with the
        state as before when it did not widen the guard's slack."""
        kept_delta, kept_member = dict(self.delta), self.last_member
        self.repair()
        measured = self.measure()
        if self._slack(measured) <= self._slack(row):
            self.delta, self.last_member = kept_delta, kept_member
            return None
        self.refocus()
        with torch.no_grad():
            terms = {k: float(v) for k, v in self.objective(self.params(), held_out).items()}
        return {
            "step": step,
            "accepted": True,
            "repair": True,
            "scale": 0.0,
            "objective": float(self.total(terms)),
            **{f"{k}_loss": v for k, v in terms.items()},
            "sparse": 0.0,
            "gated_neurons": 0,
            "flatten": self.flatten,
            **measured,
            "seconds": time.perf_counter() - start,
        }

    def run(self) -> ForsakenResult:
        config = self.config
        start = time.perf_counter()
        held_out = self.next_batch()
        with torch.no_grad():
            terms = {k: float(v) for k, v in self.objective(self.params(), held_out).items()}
        row: dict[str, Any] = {
            "step": 0,
            "accepted": True,
            "scale": 0.0,
            "objective": float(self.total(terms)),
            **{f"{k}_loss": v for k, v in terms.items()},
            "sparse": 0.0,
            "gated_neurons": 0,
            "flatten": 0.0,
            **self.measure(),
            "seconds": time.perf_counter() - start,
        }
        self.start = row
        # the guard's reference point: this model's accuracies, or the given baseline (the model before
        # the first of several unlearning rounds of one withdrawal: the budget is not spent per round)
        self.guard = {key: row[key] for key in GUARDED}
        if self.accuracy_baseline is not None:
            self.guard.update(self.accuracy_baseline)
        history = [row]
        # the best state so far (see ForsakenResult.best_step): later steps can undo earlier crossings
        best_step, best_value = 0, self.judged(row)
        best_delta = {n: d.clone() for n, d in self.delta.items()}
        stopped = self.reached(row)
        stale, best_fr, best_gap, best_forget = 0, row["fr"], abs(row["auc"] - 0.5), row["forget_loss"]
        bar = tqdm(
            total=config.max_steps, desc="forsaken", unit="step", disable=not config.progress, leave=False
        )
        step = 0
        repairs, forgot_since_repair, value_at_repair = 0, False, -math.inf
        while stopped is None:
            if step >= config.max_steps:
                stopped = "max-steps"
                break
            step += 1
            batch, held_out = self.next_batch(), self.next_batch()
            features, forget_dir, keep_dir = self.features(batch)
            self.train_generator(features, forget_dir, keep_dir, batch)
            with torch.no_grad():
                gates = MaskGenerator.hard(self.generator(features), config.gate_floor)
            accepted, scale, terms, measured, sparse = self.try_step(gates, forget_dir, keep_dir, held_out)
            if accepted:
                if scale >= 1.0:
                    self.eta = min(config.step_size, 2 * self.eta)
            else:
                measured = {k: row[k] for k in _STATS}
                self.eta /= 2  # the next step starts smaller
            row = {
                "step": step,
                "accepted": accepted,
                "scale": scale,
                "objective": float(self.total(terms)),
                **{f"{k}_loss": float(v) for k, v in terms.items()},
                "sparse": sparse,
                "gated_neurons": int((gates[:, 0] > 0).sum()),
                "flatten": self.flatten,
                **measured,
                "seconds": time.perf_counter() - start,
            }
            history.append(row)
            if accepted and self.judged(row) >= best_value:
                best_step, best_value = step, self.judged(row)
                best_delta = {n: d.clone() for n, d in self.delta.items()}
            bar.update(1)
            bar.set_postfix(fr=f"{row['fr']:.2f}", auc=f"{row['auc']:.3f}", acc=f"{row['retain_acc']:.3f}")
            stopped = self.reached(row)
            # progress: the judged quantity improved, or the forget term fell by >= 5 % of its best value
            forget_now = row["forget_loss"] if accepted else math.inf
            if config.target == "fr":
                progress = row["fr"] > best_fr or forget_now < (1 - _PROGRESS) * best_forget
            else:
                progress = abs(row["auc"] - 0.5) < best_gap or forget_now < (1 - _PROGRESS) * best_forget
            best_fr, best_gap = max(best_fr, row["fr"]), min(best_gap, abs(row["auc"] - 0.5))
            best_forget = min(best_forget, forget_now)
            stale = 0 if progress else stale + 1
            if accepted:
                forgot_since_repair = True
            if stopped is None and stale >= config.patience:
                if config.escalation > 0 and self.flatten < 1.0:
                    self.escalate()
                    best_forget, stale, self.eta = math.inf, 0, config.step_size
                    row["escalated_to"] = self.flatten
                elif (
                    config.repair_steps > 0
                    and repairs < config.max_repairs
                    and forgot_since_repair
                    and self.guard_blocked
                    and best_value > value_at_repair  # the last repair paid off (or there was none)
                    and step < config.max_steps
                ):
                    # forgetting stalled: win accuracy back, keep the forget set where it is, go on
                    repairs += 1
                    value_at_repair = best_value
                    repaired = self.repaired_row(row, step + 1, held_out, start)
                    if repaired is None:  # it did not widen the guard's slack: undone, stop
                        row["repair_undone"] = True
                        stopped = "stalled"
                        break
                    step, row = step + 1, repaired
                    history.append(row)
                    bar.update(1)
                    if not self.too_far(row) and self.judged(row) >= best_value:
                        best_step, best_value = step, self.judged(row)
                        best_delta = {n: d.clone() for n, d in self.delta.items()}
                    best_fr, best_gap = max(best_fr, row["fr"]), min(best_gap, abs(row["auc"] - 0.5))
                    best_forget, stale, forgot_since_repair = math.inf, 0, False
                    self.guard_blocked = False
                    stopped = self.reached(row)
                else:
                    stopped = "stalled"
        bar.close()
        self.delta = best_delta
        model = copy.deepcopy(self.original)
        mask_out = {n: self.delta[n].detach().clone() for n in self.base}
        _set_params(model, {n: self.base[n] + mask_out[n] for n in self.base})
        return ForsakenResult(
            mask=mask_out,
            model=model,
            history=history,
            stopped_because=stopped,
            neurons_touched=self._touched_neurons(mask_out),
            num_neurons=sum(layer.num_neurons for layer in self.layers),
            generator=self.generator,
            oracle=self.oracle,
            seconds=time.perf_counter() - start,
            best_step=best_step,
        )

    def _touched_neurons(self, mask: Mapping[str, torch.Tensor]) -> int:
        total = 0
        for layer in self.layers:
            rows = torch.cat([mask[n].reshape(layer.num_neurons, -1) for n in layer.params], dim=1)
            total += int((rows != 0).any(dim=1).sum())
        return total


def _set_params(model: nn.Module, values: Mapping[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(values[n])


# ---------------------------------------------------------------------------------------- public API
def unlearn(
    model: nn.Module,
    forget: Pair,
    reference: Pair,
    retain: Pair,
    config: ForsakenConfig | None = None,
    oracle: Any = None,
    accuracy_baseline: Mapping[str, float] | None = None,
) -> ForsakenResult:
    """Forget ``forget = (x, y)`` from ``model`` with Forsaken's trained neuron masks.

    ``reference``: samples the model never saw (the client's held-out data), which define what
    "perfectly forgotten" confidences look like; ``retain``: a few batches of retained training data,
    which keep the accuracy. ``oracle``: a fitted membership oracle for the stopping rule (default:
    a loss-threshold oracle fitted on ``retain`` vs ``reference``). ``accuracy_baseline``: the
    ``retain_acc`` and ``reference_acc`` the accuracy guard is relative to (default: ``model``'s own);
    pass ``history[0]`` of the first round when one withdrawal is unlearned over several calls with
    the same data and seed, so that ``max_accuracy_drop`` bounds the whole withdrawal, not each call.
    The input model is not modified.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    config = ForsakenConfig() if config is None else config
    if not isinstance(config, ForsakenConfig):
        raise TypeError(f"config must be a ForsakenConfig, got {type(config).__name__}")
    if oracle is not None:
        check_oracle(oracle)
    device = _device(model)
    pairs = {"forget": forget, "reference": reference, "retain": retain}
    checked = {name: _as_pair(name, pair) for name, pair in pairs.items()}
    num_classes = _num_classes(model, "forget", checked["forget"][0], device)
    for name, (x, y) in checked.items():
        if name != "forget":
            _num_classes(model, name, x, device)
        _check_labels(name, y, num_classes)
    baseline = _check_baseline(accuracy_baseline)
    unlearner = _Unlearner(
        model,
        checked["forget"],
        checked["reference"],
        checked["retain"],
        config,
        oracle,
        num_classes,
        baseline,
    )
    return unlearner.run()


def _check_baseline(baseline: Mapping[str, float] | None) -> dict[str, float] | None:
    if baseline is None:
        return None
    if not isinstance(baseline, Mapping):
        raise TypeError(f"accuracy_baseline must be a mapping, got {type(baseline).__name__}")
    missing = [key for key in GUARDED if key not in baseline]
    if missing:
        raise ValueError(f"accuracy_baseline lacks {', '.join(missing)} (it needs {', '.join(GUARDED)})")
    out = {}
    for key in GUARDED:
        value = baseline[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise ValueError(f"accuracy_baseline[{key!r}] must be an accuracy in [0, 1], got {value!r}")
        out[key] = float(value)
    return out


def apply_mask(model: nn.Module, mask: Mapping[str, torch.Tensor], scale: float = 1.0) -> nn.Module:
    """A copy of ``model`` with ``scale * mask[name]`` added to each named parameter (buffers unchanged).

    Names missing from ``mask`` are left as they are; an unknown name or a shape mismatch is an error.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not math.isfinite(scale):
        raise ValueError(f"scale must be a finite number, got {scale!r}")
    params = dict(model.named_parameters())
    unknown = sorted(set(mask) - set(params))
    if unknown:
        raise KeyError(f"mask names parameters the model does not have: {', '.join(unknown[:5])}")
    for name, delta in mask.items():
        if not isinstance(delta, torch.Tensor):
            raise TypeError(f"mask[{name!r}] must be a torch.Tensor, got {type(delta).__name__}")
        if tuple(delta.shape) != tuple(params[name].shape):
            raise ValueError(
                f"mask[{name!r}] has shape {tuple(delta.shape)}, "
                f"the parameter has {tuple(params[name].shape)}"
            )
    out = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in out.named_parameters():
            if name in mask:
                delta = mask[name].to(device=p.device, dtype=p.dtype)
                p.copy_(p + delta if scale == 1.0 else p + scale * delta)
    return out
