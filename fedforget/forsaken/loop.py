"""Forsaken's unlearning loop (Ma et al., TDSC 2022): generator -> mask -> apply -> judge.

One unlearning step (``docs/forsaken.md``), at the weights ``w = w_0 + M`` and a batch of each set::

    1. generator:  features, D^f, D^k = directions(w)
                   train theta on J(w + m_theta) + lambda_sparse S(m_theta)  (inner_updates Adam steps)
                   gates (a_j, b_j) = hard(G_theta(features_j), gate_floor)
    2. mask:       m(size) = size * (a_j D^f_p + b_j D^k_p)
    3. apply:      line search over size = eta * s on held-out batches, the accuracy guard may refuse
    4. judge:      the steering oracle measures FR / AUC; stop at the target, else the schedule decides
                   (escalate, repair, stop) when there was no progress for ``patience`` steps

The pieces: :mod:`~fedforget.forsaken.objective` (J), :mod:`~fedforget.forsaken.targets`,
:mod:`~fedforget.forsaken.mask`, :mod:`~fedforget.forsaken.line_search` (apply, guard),
:mod:`~fedforget.forsaken.measure` (judge), :mod:`~fedforget.forsaken.schedule`, and
:mod:`~fedforget.forsaken.ablation` (``gates="fixed"`` / ``"none"`` replace step 1).
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from fedforget.cost import phase
from fedforget.forsaken.ablation import FineTuning, fixed_gates
from fedforget.forsaken.config import ForsakenConfig
from fedforget.forsaken.generator import MaskGenerator
from fedforget.forsaken.inputs import (
    GUARDED,
    Pair,
    as_pair,
    check_baseline,
    check_labels,
    device_of,
    num_classes,
)
from fedforget.forsaken.line_search import AccuracyGuard, LineSearch
from fedforget.forsaken.mask import directions, mask_from_gates, sparse_term, touched_neurons
from fedforget.forsaken.measure import STATS, Measure
from fedforget.forsaken.objective import Objective
from fedforget.forsaken.oracle import LossThresholdOracle, check_oracle
from fedforget.forsaken.schedule import Schedule, repair
from fedforget.forsaken.sets import Batch, Sets
from fedforget.forsaken.weights import Weights, set_params

__all__ = ["GUARDED", "ForsakenResult", "unlearn"]


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
    """The trained generator (untrained with ``gates="fixed"`` / ``"none"``)."""
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


Proposal = Callable[[float], dict[str, torch.Tensor]]


@dataclasses.dataclass
class _Proposed:
    """Step 1-2's output: the mask at any size, the neurons gated, and the sparsity of an applied mask."""

    propose: Proposal
    gated_neurons: int
    sparse: Callable[[dict[str, torch.Tensor], float], float]


class _Run:
    """The state of one :func:`unlearn` call: the pieces of the loop, wired together."""

    def __init__(
        self,
        model: nn.Module,
        *,
        forget: Pair,
        reference: Pair,
        retain: Pair,
        config: ForsakenConfig,
        oracle: Any,
        num_classes: int,
        accuracy_baseline: Mapping[str, float] | None,
    ) -> None:
        self.config, self.original, self.accuracy_baseline = config, model, accuracy_baseline
        device = device_of(model)
        self.weights = Weights(model)
        self.sets = Sets(
            forget=forget,
            reference=reference,
            retain=retain,
            seed=config.seed,
            batch_size=config.batch_size,
            device=device,
        )
        self.oracle = oracle if oracle is not None else LossThresholdOracle.fit(model, retain, reference)
        member_before = np.asarray(self.oracle.decide(model, *forget), dtype=bool)
        self.objective = Objective(
            config=config,
            model=model,
            weights=self.weights,
            sets=self.sets,
            oracle=self.oracle,
            member_before=member_before,
            num_classes=num_classes,
        )
        self.measure = Measure(
            config=config,
            oracle=self.oracle,
            weights=self.weights,
            sets=self.sets,
            member_before=member_before,
        )
        self.generator = MaskGenerator.seeded(config.seed, hidden=config.generator_hidden).to(device)
        self.optimizer = torch.optim.Adam(self.generator.parameters(), lr=config.generator_lr)
        self.fine_tuning = FineTuning(self.objective) if config.gates == "none" else None

    # ---- steps 1 and 2: generator -> mask
    def propose(self, batch: Batch, eta: float) -> _Proposed:
        """The step proposed on ``batch`` (``eta``: the line search's base size, for training and S(m))."""
        weights = self.weights
        if self.fine_tuning is not None:  # gates="none": plain fine-tuning
            with phase("fine-tuning"):
                proposal = self.fine_tuning.proposal(batch)
            return _Proposed(proposal, weights.num_neurons, lambda mask, eta: 0.0)
        with phase("directions"):
            features, forget_dir, keep_dir = directions(self.objective, batch)
        if self.config.gates == "fixed":
            gates = fixed_gates(weights.num_neurons, features.device)
        else:
            with phase("generator"):
                self.train_generator(features, forget_dir, keep_dir, batch, eta)
                with torch.no_grad():
                    gates = MaskGenerator.hard(self.generator(features), self.config.gate_floor)

        def propose(size: float) -> dict[str, torch.Tensor]:
            return mask_from_gates(weights.layers, gates, forget_dir, keep_dir, size)

        def sparse(mask: dict[str, torch.Tensor], eta: float) -> float:
            return float(sparse_term(weights.masked, mask, forget_dir, eta))

        return _Proposed(propose, int((gates[:, 0] > 0).sum()), sparse)

    def train_generator(
        self, features: torch.Tensor, forget_dir: dict, keep_dir: dict, batch: Batch, eta: float
    ) -> None:
        """``inner_updates`` Adam updates of the generator on J(w + m_theta) + lambda_sparse S(m_theta),
        differentiating through the applied step."""
        objective, weights = self.objective, self.weights
        current = weights.params()
        self.generator.train()
        for _ in range(self.config.inner_updates):
            mask = mask_from_gates(weights.layers, self.generator(features), forget_dir, keep_dir, eta)
            trial = {n: current[n] + mask[n] if n in mask else current[n] for n in current}
            terms = objective.terms(trial, batch)
            terms["sparse"] = sparse_term(weights.masked, mask, forget_dir, eta)
            loss = objective.total(terms)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        self.generator.eval()

    # ---- the loop
    def row(
        self,
        step: int,
        *,
        accepted: bool,
        scale: float,
        terms: Mapping[str, float],
        sparse: float,
        gated: int,
        measured: Mapping[str, Any],
        start: float,
        repair: bool = False,
    ) -> dict[str, Any]:
        """One history row (``docs/forsaken.md``, History columns)."""
        row: dict[str, Any] = {"step": step, "accepted": accepted}
        if repair:
            row["repair"] = True
        row.update(
            {
                "scale": scale,
                "objective": float(self.objective.total(terms)),
                **{f"{k}_loss": float(v) for k, v in terms.items()},
                "sparse": sparse,
                "gated_neurons": gated,
                "flatten": self.objective.level,
            }
        )
        row.update(measured)
        row["seconds"] = time.perf_counter() - start
        return row

    def run(self) -> ForsakenResult:
        config, weights, objective, measure = self.config, self.weights, self.objective, self.measure
        start = time.perf_counter()
        held_out = self.sets.next_batch()
        terms = objective.values(weights.params(), held_out)
        row = self.row(
            0, accepted=True, scale=0.0, terms=terms, sparse=0.0, gated=0, measured=measure(), start=start
        )
        # the guard's reference point: this model's accuracies, or the given baseline (the model before
        # the first of several unlearning rounds of one withdrawal: the budget is not spent per round)
        baseline = {key: row[key] for key in GUARDED}
        baseline.update(self.accuracy_baseline or {})
        guard = AccuracyGuard(
            config=config, baseline=baseline, n_retain=len(self.sets.ykc), n_reference=len(self.sets.yc)
        )
        search = LineSearch(config=config, objective=objective, measure=measure, guard=guard)
        schedule = Schedule(config, row)
        history = [row]
        # the best state so far (see ForsakenResult.best_step): later steps can undo earlier crossings
        best_step, best_value = 0, measure.judged(row)
        best_delta = {n: d.clone() for n, d in weights.delta.items()}
        stopped = measure.reached(row)
        bar = tqdm(
            total=config.max_steps, desc="forsaken", unit="step", disable=not config.progress, leave=False
        )
        step = 0
        while stopped is None:
            if step >= config.max_steps:
                stopped = "max-steps"
                break
            step += 1
            batch, held_out = self.sets.next_batch(), self.sets.next_batch()
            proposed = self.propose(batch, search.eta)  # 1-2. generator -> mask
            with phase("line-search"):
                outcome = search.step(proposed.propose, held_out)  # 3. apply
            sparse = proposed.sparse(outcome.mask, outcome.eta) if outcome.mask is not None else 0.0
            measured = outcome.measured if outcome.accepted else {k: row[k] for k in STATS}
            row = self.row(
                step,
                accepted=outcome.accepted,
                scale=outcome.scale,
                terms=outcome.terms,
                sparse=sparse,
                gated=proposed.gated_neurons,
                measured=measured,
                start=start,
            )
            history.append(row)
            if outcome.accepted and measure.judged(row) >= best_value:  # 4. judge
                best_step, best_value = step, measure.judged(row)
                best_delta = {n: d.clone() for n, d in weights.delta.items()}
            bar.update(1)
            bar.set_postfix(fr=f"{row['fr']:.2f}", auc=f"{row['auc']:.3f}", acc=f"{row['retain_acc']:.3f}")
            stopped = measure.reached(row)
            schedule.observe(row, accepted=outcome.accepted)
            if stopped is not None or not schedule.stalled():
                continue
            move = schedule.move(
                level=objective.level, guard_blocked=guard.blocked, best_value=best_value, step=step
            )
            if move == "escalate":
                objective.escalate()
                schedule.escalated()
                search.reset()
                row["escalated_to"] = objective.level
            elif move == "repair":
                # forgetting stalled: win accuracy back, keep the forget set where it is, go on
                schedule.repairing(best_value)
                with phase("repair"):
                    repaired = self.repaired_row(row, step + 1, held_out, guard, search, start)
                if repaired is None:  # it did not widen the guard's slack: undone, stop
                    row["repair_undone"] = True
                    stopped = "stalled"
                    break
                step, row = step + 1, repaired
                history.append(row)
                bar.update(1)
                if not guard.too_far(row) and measure.judged(row) >= best_value:
                    best_step, best_value = step, measure.judged(row)
                    best_delta = {n: d.clone() for n, d in weights.delta.items()}
                schedule.repaired(row)
                guard.blocked = False
                stopped = measure.reached(row)
            else:
                stopped = "stalled"
        bar.close()
        return self.result(best_delta, history, stopped, best_step, start)

    def repaired_row(
        self,
        row: Mapping[str, Any],
        step: int,
        held_out: Batch,
        guard: AccuracyGuard,
        search: LineSearch,
        start: float,
    ) -> dict[str, Any] | None:
        """Run a repair phase after ``row``; its history row (``repair = True``), or ``None`` with the
        weights as before when it did not widen the guard's slack."""
        weights, objective, measure = self.weights, self.objective, self.measure
        kept_delta, kept_member = dict(weights.delta), measure.last_member
        repair(objective, steps=self.config.repair_steps, lr=self.config.repair_lr)
        objective.reset_level()
        search.reset()
        measured = measure()
        if guard.slack(measured) <= guard.slack(row):
            weights.delta, measure.last_member = kept_delta, kept_member
            return None
        objective.refocus(measure.last_member)
        terms = objective.values(weights.params(), held_out)
        return self.row(
            step,
            accepted=True,
            scale=0.0,
            terms=terms,
            sparse=0.0,
            gated=0,
            measured=measured,
            start=start,
            repair=True,
        )

    def result(
        self,
        delta: dict[str, torch.Tensor],
        history: list[dict[str, Any]],
        stopped: str,
        best_step: int,
        start: float,
    ) -> ForsakenResult:
        weights = self.weights
        weights.delta = delta
        model = copy.deepcopy(self.original)
        mask = {n: weights.delta[n].detach().clone() for n in weights.base}
        set_params(model, {n: weights.base[n] + mask[n] for n in weights.base})
        return ForsakenResult(
            mask=mask,
            model=model,
            history=history,
            stopped_because=stopped,
            neurons_touched=touched_neurons(weights.layers, mask),
            num_neurons=weights.num_neurons,
            generator=self.generator,
            oracle=self.oracle,
            seconds=time.perf_counter() - start,
            best_step=best_step,
        )


def unlearn(
    model: nn.Module,
    *,
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
    which keep the accuracy. The three sets are keyword-only (they cannot be swapped by position).
    ``oracle``: a fitted membership oracle for the stopping rule (default: a loss-threshold oracle
    fitted on ``retain`` vs ``reference``). ``accuracy_baseline``: the ``retain_acc`` and
    ``reference_acc`` the accuracy guard is relative to (default: ``model``'s own); pass ``history[0]``
    of the first round when one withdrawal is unlearned over several calls with the same data and seed,
    so that ``max_accuracy_drop`` bounds the whole withdrawal, not each call. The input model is not
    modified.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    config = ForsakenConfig() if config is None else config
    if not isinstance(config, ForsakenConfig):
        raise TypeError(f"config must be a ForsakenConfig, got {type(config).__name__}")
    if oracle is not None:
        check_oracle(oracle)
    device = device_of(model)
    pairs = {"forget": forget, "reference": reference, "retain": retain}
    checked = {name: as_pair(name, pair) for name, pair in pairs.items()}
    classes = num_classes(model, "forget", checked["forget"][0], device)
    for name, (x, y) in checked.items():
        if name != "forget":
            num_classes(model, name, x, device)
        check_labels(name, y, classes)
    baseline = check_baseline(accuracy_baseline)
    with phase("setup"):
        run = _Run(
            model,
            forget=checked["forget"],
            reference=checked["reference"],
            retain=checked["retain"],
            config=config,
            oracle=oracle,
            num_classes=classes,
            accuracy_baseline=baseline,
        )
    return run.run()
