"""Forsaken's unlearning rounds as the federation runs them, in one process (for the benchmarks).

One attempt: client ``client`` withdraws ``forget_ids``; up to ``unlearn-rounds`` rounds, each as
``clients/app.py`` (``unlearn``) and ``server/unlearning.py`` do it:

1. the device runs :func:`fedforget.forsaken.unlearn` on the current global model: reference = its
   held-out data, retain = a seeded ``retain-samples`` subset of its remaining training data (its
   held-out data when none remains), ``ForsakenConfig(target=unlearn-target, target_fr=target-fr,
   max_steps=forsaken-steps, seed=seed * 7_919 + server_round)``; from round 2 on, the guard's
   accuracies of round 1 are the baseline (one accuracy budget per withdrawal);
2. the server validates the mask (``validate_mask``, ``max-mask-ratio``; a rejected mask ends the
   attempt with the model as it was) and adds it to the global model;
3. the oracle judges the new model: FR against the decisions ``before`` the attempt (and the attack
   AUC with ``unlearn-target=retrain``); the attempt ends when the target is met, or when the mask
   was zero (the next round would repeat this one);
4. the attempt ends with its best round's model (:class:`fedforget.attempt_rules.BestRound`).

Used by ``simulations/forsaken_benchmark.py`` (and its panel) and ``simulations/paper_table.py``, so the
two measure the same procedure.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from fedforget import forsaken
from fedforget.attempt_rules import BestRound, target_met
from fedforget.client_data import ClientData
from fedforget.config import RunConfig
from fedforget.forsaken import ForsakenConfig
from fedforget.metrics import attack_auc, forgetting_rate_from_arrays
from fedforget.mia import MembershipOracle
from server.validation import MaskRejected, parameter_names, validate_mask

__all__ = ["RoundObserver", "unlearn_like_the_federation"]

RoundObserver = Callable[[int, torch.nn.Module], None]
"""``observe(unlearn_round, model)``: sees the global model after each round; not timed."""


def unlearn_like_the_federation(
    config: RunConfig,
    model: torch.nn.Module,
    oracle: MembershipOracle,
    client: ClientData,
    forget_ids: np.ndarray,
    server_round: int,
    overrides: dict[str, Any] | None = None,
    observe: RoundObserver | None = None,
) -> dict[str, Any]:
    """One attempt (module docstring); ``model`` is not modified.

    ``overrides``: ForsakenConfig fields to change (``--forsaken KEY=VALUE``, or a panel variant's seed;
    the federation has none). Returns ``model`` (the kept round's), ``before`` (the oracle's decisions
    on the original model), ``rounds`` (one row per round: ``unlearn-round``, ``steps``,
    ``stopped-because``, ``touched-fraction``, ``forsaken-seconds``, ``fr``; ``attack-auc`` with
    ``retrain``; ``mask-rejected`` or ``unlearning-stalled`` on the round that ended it), ``seconds``
    (wall time of the attempt, the oracle's decisions included, ``observe`` excluded) and
    ``kept-round`` (the round kept when it is not the last measured one, else ``None``).
    """
    _, x_forget, y_forget = client.subset(forget_ids)
    reference = (client.x_holdout, client.y_holdout)
    retained = client.without(forget_ids)
    x_keep, y_keep = retained.x_train, retained.y_train
    if len(y_keep) == 0:
        x_keep, y_keep = reference
    start = time.perf_counter()
    observed = 0.0
    before = oracle.decide(model, x_forget, y_forget)
    rng = np.random.default_rng([config.seed, server_round, client.partition_id, 97])
    keep = rng.permutation(len(y_keep))[: config.retain_samples]
    rounds: list[dict[str, Any]] = []
    baseline = None  # the guard's accuracies before the first round, sent back in the later ones
    best = BestRound[torch.nn.Module](config.unlearn_target)
    last_measured = 0
    for unlearn_round in range(1, config.unlearn_rounds + 1):
        fields: dict[str, Any] = {
            "target": config.unlearn_target,
            "target_fr": config.target_fr,
            "max_steps": config.forsaken_steps,
            "seed": config.seed * 7_919 + server_round,
        }
        result = forsaken.unlearn(
            model,
            forget=(x_forget, y_forget),
            reference=reference,
            retain=(x_keep[keep], y_keep[keep]),
            config=ForsakenConfig(**{**fields, **(overrides or {})}),
            oracle=oracle,
            accuracy_baseline=baseline,
        )
        if baseline is None:
            baseline = {key: result.history[0][key] for key in forsaken.GUARDED}
        mask = {name: delta.detach().cpu().numpy() for name, delta in result.mask.items()}
        row: dict[str, Any] = {
            "unlearn-round": unlearn_round,
            "steps": result.steps,
            "stopped-because": result.stopped_because,
            "touched-fraction": result.touched_fraction,
            "forsaken-seconds": result.seconds,
        }
        try:
            validate_mask(mask, model.state_dict(), parameter_names(model), config.max_mask_ratio)
        except MaskRejected as error:  # the server would never apply it: the model stays as it is
            row["mask-rejected"] = str(error)
            rounds.append(row)
            break
        model = forsaken.apply_mask(model, result.mask)
        after = oracle.decide(model, x_forget, y_forget)
        row["fr"] = forgetting_rate_from_arrays(forget_ids, before, after).fr
        if config.unlearn_target == "retrain":
            row["attack-auc"] = attack_auc(
                oracle.scores(model, x_forget, y_forget), oracle.scores(model, *reference)
            )
        rounds.append(row)
        last_measured = unlearn_round
        best.offer(unlearn_round, row, model)
        if observe is not None:
            mark = time.perf_counter()
            observe(unlearn_round, model)
            observed += time.perf_counter() - mark
        if target_met(config.unlearn_target, config.target_fr, row):
            break
        if not any(np.any(delta) for delta in mask.values()):
            row["unlearning-stalled"] = True  # as the server: the next round would repeat this one
            break
    kept = best.earlier(last_measured)
    if kept is not None:
        kept_round, model, _ = kept
    seconds = time.perf_counter() - start - observed
    return {
        "model": model,
        "before": before,
        "rounds": rounds,
        "seconds": seconds,
        "kept-round": None if kept is None else kept_round,
    }
