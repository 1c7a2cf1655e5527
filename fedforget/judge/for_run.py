"""The judge of one run, fitted from its config, and calibrated in process on its clients.

One copy of the rule every path uses:

* :func:`fit_run_judge` is what ``server/evaluator.py`` fits at the first withdrawal and what the
  benchmarks fit (``simulations/withdrawal_judge.py``): the ``judge-attacks`` of the run config,
  ``lira`` left out when ``num-shadows < 3`` (LiRA needs OUT shadows for every sample), shadow
  federations on the judge's half of the auxiliary data (:func:`judge_aux_half`) trained like the
  target (:meth:`ShadowFederationRecipe.for_run`); the first attack is the headline.
* :func:`calibrate_clients` is the federation's per-round ``query.judge`` done in one process: each
  client scores its retained (member) and held-out (non-member) samples, counts per bin, and the
  counts are added (:func:`fedforget.judge.calibration.calibrate`). Samples a client has withdrawn are
  left out of its members, as the device leaves them out after unlearning.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from torch import nn

from fedforget.judge.attacks import Judge, LossAttack, fit_judge
from fedforget.judge.calibration import calibrate, client_calibration
from fedforget.judge.histogram import JudgePower
from fedforget.judge.shadow_federation import ShadowFederationRecipe, judge_aux_half

__all__ = ["calibrate_clients", "calibration_seed", "fit_run_judge", "run_judge_attacks"]


def calibration_seed(run_seed: int, partition_id: int) -> int:
    """The seed of a client's calibration subsample: ``run_seed * 1_009 + partition_id``."""
    return int(run_seed) * 1_009 + int(partition_id)


def run_judge_attacks(config: Any) -> tuple[list[str], list[str]]:
    """``(attacks, skipped)``: the run's ``judge-attacks`` that can be fitted, and why others cannot."""
    wanted = [a.strip() for a in str(config.judge_attacks).split(",") if a.strip()]
    skipped = [f"{a}: needs num-shadows >= 3" for a in wanted if a == "lira" and config.num_shadows < 3]
    return [a for a in wanted if not (a == "lira" and config.num_shadows < 3)], skipped


def fit_run_judge(config: Any, dataset: Any, split: Any, *, progress: bool | None = False) -> Judge:
    """The run's judge (module docstring). ``dataset``: the run's loaded dataset; ``split``: its split."""
    from fedforget.mia.recipe import oracle_model_factory

    attacks, _ = run_judge_attacks(config)
    if attacks == ["loss"]:
        return Judge({"loss": LossAttack()}, "loss")
    aux = np.asarray(split.aux_ids, dtype=np.int64)
    if len(aux) < 2:
        raise ValueError("the judge's shadow federations need auxiliary data: aux-fraction is 0")
    judge_ids, _ = judge_aux_half(aux, config.seed)
    recipe = ShadowFederationRecipe.for_run(config, split, num_federations=config.num_shadows)
    return fit_judge(
        oracle_model_factory(config, dataset),
        dataset.x_train[judge_ids],
        dataset.y_train[judge_ids],
        recipe,
        attacks=attacks,
        headline=attacks[0],
        progress=progress,
    )


def calibrate_clients(
    judge: Judge,
    model: nn.Module,
    clients: Sequence[Any],
    *,
    run_seed: int,
    withdrawn: Mapping[int, np.ndarray] | None = None,
) -> dict[str, JudgePower]:
    """The judge's power on ``model`` from every client's counts (module docstring).

    ``clients``: :class:`fedforget.client_data.ClientData` (``partition_id``, ``x_train``...,
    ``without(ids)``); ``withdrawn``: ``{partition_id: sample ids}`` no longer among its members.
    """
    withdrawn = withdrawn or {}
    calibrations = []
    for client in clients:
        ids = withdrawn.get(client.partition_id)
        kept = client.without(ids) if ids is not None and len(ids) else client
        calibrations.append(
            client_calibration(
                judge,
                model,
                retained=(kept.x_train, kept.y_train),
                heldout=(client.x_holdout, client.y_holdout),
                seed=calibration_seed(run_seed, client.partition_id),
            )
        )
    return calibrate(calibrations)
