"""Forsaken's unlearning attempt as the federation runs it, in one process (for the benchmarks).

One attempt: client ``client`` withdraws ``forget_ids``. The loop is the federation's own
(:func:`fedforget.unlearning_attempt.run_attempt`, which ``server/unlearning.py`` also runs); this module
is only its in-process transport:

* asking for masks = the device's Forsaken call, :func:`fedforget.forsaken.on_device.unlearn_on_device`
  (the ClientApp's call: same reference, i.e. the device's held-out samples plus the never-seen
  samples the server lends in ``train.unlearn`` (:func:`fedforget.steer.steer_reference`), retained
  subset, seeds and guard baseline), steered by the
  device's own oracle (:mod:`fedforget.steer`), which also says whether the target is met;
* validating = the server's rule (:func:`server.validation.validate_mask`, ``max-mask-ratio``);
* measuring = the round's own fields (steps, why it stopped, seconds) and ``observe(round, model)``,
  a caller's untimed, uncounted look at the model after each round. The judge is not here: the
  benchmarks judge the kept model afterwards (``simulations/withdrawal_judge.py``), as the server's
  judge does, apart from anything the attempt sees.

Cost: wall seconds and sample-passes (:mod:`fedforget.cost`) of the whole attempt, the device's
steering oracle and Forsaken included, ``observe`` excluded.

Used by ``simulations/forsaken_benchmark.py`` (and its panel) and ``simulations/paper_table.py``, so the
two measure the same procedure as the server.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from fedforget import data, forsaken
from fedforget.client_data import ClientData, split_for
from fedforget.config import RunConfig
from fedforget.cost import count_sample_passes, not_counted, phase
from fedforget.forsaken.on_device import guard_name, unlearn_on_device
from fedforget.steer import (
    fit_steering_oracle,
    steer_reference,
    steer_report,
    steer_seed,
    with_lent_reference,
)
from fedforget.unlearning_attempt import MaskReply, MaskRound, run_attempt
from protocol.codec import record_nbytes, samples_to_record
from server.validation import parameter_names, validate_mask

__all__ = ["RoundObserver", "unlearn_like_the_federation"]

RoundObserver = Callable[[int, torch.nn.Module], None]
"""``observe(unlearn_round, model)``: sees the global model after each round; not timed."""


def lent_reference(config: RunConfig) -> tuple[np.ndarray, np.ndarray]:
    """What the server lends a withdrawing device in ``train.unlearn`` (``server/unlearning.py``)."""
    dataset = data.load(config)
    return steer_reference(
        dataset.x_train,
        dataset.y_train,
        split_for(config).aux_ids,
        run_seed=config.seed,
        limit=config.steer_reference_samples,
    )


class _InProcess:
    """The attempt's transport for one device in this process (module docstring)."""

    def __init__(
        self,
        config: RunConfig,
        model: torch.nn.Module,
        client: ClientData,
        forget_ids: np.ndarray,
        server_round: int,
        overrides: dict[str, Any] | None,
        observe: RoundObserver | None,
    ) -> None:
        self.config, self.model, self.client = config, model, client
        self.server_round, self.overrides, self.observe = server_round, overrides, observe
        self.forget_ids = forget_ids
        _, self.x_forget, self.y_forget = client.subset(forget_ids)
        lent = lent_reference(config)
        self.reference = with_lent_reference((client.x_holdout, client.y_holdout), lent)
        # as train.unlearn carries them, encoded as the server encodes them
        self.lent_bytes = record_nbytes(samples_to_record(lent)) if len(lent[1]) else 0
        retained = client.without(forget_ids)
        self.retained = (retained.x_train, retained.y_train)
        self.trainable = parameter_names(model)
        self.round_fields: dict[str, Any] = {}
        self.rows: list[dict[str, Any]] = []
        self.observed = 0.0
        self.mask_bytes = 0

    def model_at(self, state: Mapping[str, torch.Tensor]) -> torch.nn.Module:
        model = copy.deepcopy(self.model)
        model.load_state_dict(dict(state))
        return model

    def ask_for_masks(
        self,
        state: dict[str, torch.Tensor],
        owners: Sequence[int],
        *,
        unlearn_round: int,
        guards: Mapping[int, Mapping[str, float]],
    ) -> MaskRound[int]:
        owner = self.client.partition_id
        guard = guards.get(owner) or {}
        baseline = {k: guard[guard_name(k)] for k in forsaken.GUARDED} if guard else None
        before = self.model_at(state)
        with phase("steer-oracle"):
            steer = fit_steering_oracle(
                before,
                retained=self.retained,
                heldout=self.reference,
                seed=steer_seed(self.config.seed, self.server_round, owner),
                forget=(self.x_forget, self.y_forget),
            )
        with phase("forsaken"):
            result = unlearn_on_device(
                before,
                forget=(self.x_forget, self.y_forget),
                reference=self.reference,
                retained=self.retained,
                run_seed=self.config.seed,
                server_round=self.server_round,
                partition_id=owner,
                retain_samples=self.config.retain_samples,
                target=self.config.unlearn_target,
                target_fr=self.config.target_fr,
                max_steps=self.config.forsaken_steps,
                oracle=steer,
                accuracy_baseline=baseline,
                overrides=self.overrides,
            )
        first = baseline if baseline is not None else {k: result.history[0][k] for k in forsaken.GUARDED}
        metrics = {guard_name(k): float(v) for k, v in first.items()}
        metrics["client-seconds"] = result.seconds
        with phase("steer-report"):
            report = steer_report(
                steer,
                before=before,
                after=forsaken.apply_mask(before, result.mask),
                forget=(self.x_forget, self.y_forget),
                heldout=self.reference,
                target=self.config.unlearn_target,
                target_fr=self.config.target_fr,
            )
        metrics.update(report.metrics())
        self.round_fields = {
            "steps": result.steps,
            "stopped-because": result.stopped_because,
            "touched-fraction": result.touched_fraction,
            "forsaken-seconds": result.seconds,
        }
        mask = {name: delta.detach().cpu().numpy() for name, delta in result.mask.items()}
        self.mask_bytes += sum(int(v.nbytes) for v in mask.values())
        return MaskRound({owner: MaskReply(mask, metrics)})

    def validate(self, mask: Mapping[str, np.ndarray], state: dict[str, torch.Tensor]) -> None:
        validate_mask(mask, state, self.trainable, self.config.max_mask_ratio)

    def measure(self, state: dict[str, torch.Tensor], *, unlearn_round: int) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.round_fields)
        if self.observe is not None:
            mark = time.perf_counter()
            with not_counted():
                self.observe(unlearn_round, self.model_at(state))
            self.observed += time.perf_counter() - mark
        return out

    def log(self, row: dict[str, Any], *, event: str | None = None) -> None:
        if event is None:
            self.rows.append(row)
        elif event == "mask-rejected" and self.rows:
            self.rows[-1]["mask-rejected"] = row["reason"]
        elif event == "mask-rejected":
            self.rows.append({"unlearn-round": 1, **self.round_fields, "mask-rejected": row["reason"]})
        elif event == "unlearning-stalled":
            self.rows[-1]["unlearning-stalled"] = True


def unlearn_like_the_federation(
    config: RunConfig,
    model: torch.nn.Module,
    client: ClientData,
    forget_ids: np.ndarray,
    server_round: int,
    overrides: dict[str, Any] | None = None,
    observe: RoundObserver | None = None,
) -> dict[str, Any]:
    """One attempt (module docstring); ``model`` is not modified.

    ``overrides``: ForsakenConfig fields to change (``--forsaken KEY=VALUE``, or a panel variant's seed;
    the federation has none). Returns ``model`` (the kept round's), ``rounds`` (one row per round:
    ``unlearn-round``, ``steps``, ``stopped-because``, ``touched-fraction``, ``forsaken-seconds``;
    ``mask-rejected`` or ``unlearning-stalled`` on the round that ended it), ``seconds`` (wall time of
    the attempt, ``observe`` excluded), ``sample-passes`` (:class:`fedforget.cost.SamplePasses` of the
    attempt, ``observe`` excluded), ``mask-bytes`` (bytes of the masks sent up), ``lent-bytes``
    (bytes of the never-seen samples lent with each round's ``train.unlearn``) and
    ``steer-target-met`` (whether the attempt ended because the device's own oracle, which Forsaken
    steers by, said the target was met).
    """
    start = time.perf_counter()
    transport = _InProcess(config, model, client, forget_ids, server_round, overrides, observe)
    with count_sample_passes() as passes:
        result = run_attempt(
            transport,
            state_before=model.state_dict(),
            owners=[client.partition_id],
            rounds=config.unlearn_rounds,
        )
    seconds = time.perf_counter() - start - transport.observed
    return {
        "model": transport.model_at(result.state),
        "rounds": transport.rows,
        "seconds": seconds,
        "sample-passes": passes,
        "mask-bytes": transport.mask_bytes,
        "lent-bytes": transport.lent_bytes,
        "steer-target-met": result.steer_target_met,
    }
