"""The client side of ``train.unlearn``: one function per client-side method, each returning a delta.

Every method gets the global model ``w`` (already loaded into ``setup.model``), the device's forget
set for the requests named in the message, and returns a :class:`ClientDelta`: the change
``m = w' - w`` over the model's trainable parameters (the server adds it, ``w <- w + sum_k m_k``, and
validates it exactly like a Forsaken mask), plus the metrics the server logs, among them
``steer-fr``, ``steer-auc`` and ``steer-target-met`` (:mod:`fedforget.steer`: whether the device's
own oracle says the delta reached the target; the server's attempt stops on them).

* ``forsaken``: :func:`fedforget.forsaken.unlearn` (``docs/forsaken.md``), steered by the device's own
  oracle (:mod:`fedforget.steer`), never by the server's judge.
* ``gradient-ascent``: :func:`fedforget.baselines.ascent_delta`: bounded ascent of the loss on the
  forget set, at most ``ascent-steps`` steps, stopped at the loss of a know-nothing model (``ln K``),
  and projected onto ``||m||_2 <= max-mask-ratio * ||w||_2 / 2`` so that a correct delta always
  passes the server's norm check.
* ``pga``: :func:`fedforget.baselines.pga_delta` (Halimi et al. 2022). The paper's reference model is
  the average of the *other* clients' models, ``w_ref = (n w - n_i w_i) / (n - n_i)``. The server
  loop does not keep per-client updates (it stores only the global model), so the device cannot know
  ``w_i`` of the last round; **we approximate ``w_ref`` by the global model ``w``** (``n_i = 0``) and
  start the ascent from ``w``. With many clients ``w_ref -> w`` anyway; with few, the ball is centred
  on a model that still holds some of the client's contribution. The radius is the paper's rule
  (a third of the mean distance from ``w_ref`` to fresh random models), capped like gradient ascent's.

The repair of both ascent methods is the normal FedAvg training that follows the unlearning rounds.

**A floor on the samples per mask** (``min-forget-samples``, ``docs/privacy.md``): a mask computed
from one sample reveals that sample (for a softmax-linear model, exactly: the ratio of a weight row's
delta to its bias delta is ``x``). When the forget set has fewer than ``min-forget-samples`` samples,
the device pads the set the mask is computed from with decoys: seeded (run seed, partition, request
ids -- the same decoys in every unlearning round of a request) random samples of its own retained
training data, so the mask mixes at least that many samples. The decoys stay in the training data
(FedAvg re-learns them) and are kept out of Forsaken's retain set; the membership decisions and the
forgetting rate still cover only the withdrawn samples. ``num-decoys`` in the metrics says how many.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import math
from typing import Any

import numpy as np
import torch
from flwr.app import ConfigRecord

from clients.context import ClientSetup
from fedforget import forsaken
from fedforget.baselines import AscentConfig, PGAConfig, ascent_delta, pga_delta
from fedforget.client_data import ClientData
from fedforget.forsaken.on_device import guard_name, unlearn_on_device
from fedforget.mia import MembershipOracle
from fedforget.steer import fit_steering_oracle, steer_report, steer_seed, with_lent_reference

CLIENT_METHODS = ("forsaken", "gradient-ascent", "pga")


"""Methods whose unlearning is a delta computed on the withdrawing device."""

ASCENT_LEARNING_RATE = 0.01
"""SGD step of the ascent methods (the library's default)."""

NORM_SHARE = 0.5
"""Ascent deltas are projected onto ``||m|| <= NORM_SHARE * max-mask-ratio * ||w||``."""


@dataclasses.dataclass(frozen=True)
class ClientDelta:
    """What one device sends back: ``mask`` (parameter -> delta), scalar ``metrics``, ``stopped``."""

    mask: dict[str, np.ndarray]
    metrics: dict[str, float]
    stopped_because: str


def compute_delta(
    method: str,
    setup: ClientSetup,
    config: ConfigRecord,
    forget: tuple[np.ndarray, np.ndarray],
    *,
    lent: tuple[np.ndarray, np.ndarray] | None = None,
) -> ClientDelta:
    """The delta of ``method`` for ``forget`` = ``(x, y)`` from the global model in ``setup.model``.

    ``lent``: the never-seen samples the server lent (``steer-reference``); the device's never-seen
    reference is its held-out samples plus these (:func:`fedforget.steer.with_lent_reference`).

    The device steers by its own oracle, never by the server's judge (:mod:`fedforget.steer`): fitted
    here on the current model from the device's retained and held-out samples, Forsaken picks its
    targets and stops with it, and every method reports ``steer-fr``, ``steer-auc`` and
    ``steer-target-met`` of its delta (what the server's attempt stops on). Raises ValueError naming
    the client-side methods for any other ``method``. A forget set smaller than
    ``min-forget-samples`` is padded with decoys first (:func:`decoys`, module docstring).
    """
    if method not in CLIENT_METHODS:
        raise ValueError(
            f"train.unlearn asks for unlearn-method {method!r}; "
            f"the client computes only {', '.join(CLIENT_METHODS)}"
        )
    withdrawn = forget  # what the steer measures: the withdrawn samples, not the decoys
    decoy_ids = decoys(setup, [str(r) for r in config.get("request-ids", [])], len(forget[1]))
    if decoy_ids.size:
        _, x_decoy, y_decoy = setup.device.data.subset(decoy_ids)
        forget = (np.concatenate([forget[0], x_decoy]), np.concatenate([forget[1], y_decoy]))
    run = setup.config
    retained = setup.device.training_data()
    if decoy_ids.size:  # decoys are in the forget set: neither members of the steer nor retained
        retained = retained.without(decoy_ids)
    heldout = with_lent_reference(setup.device.reference_set(), lent)
    before = copy.deepcopy(setup.model)
    steer = fit_steering_oracle(
        before,
        retained=(retained.x_train, retained.y_train),
        heldout=heldout,
        seed=steer_seed(run.seed, setup.server_round, setup.partition_id),
        forget=withdrawn,
    )
    if method == "forsaken":
        result = _forsaken(setup, config, forget, steer, retained=retained, reference=heldout)
    elif method == "gradient-ascent":
        result = _gradient_ascent(setup, forget)
    else:
        result = _pga(setup, forget)
    after = copy.deepcopy(before)
    with torch.no_grad():
        for name, parameter in after.named_parameters():
            if name in result.mask:
                parameter.add_(torch.as_tensor(result.mask[name], dtype=parameter.dtype))
    report = steer_report(
        steer,
        before=before,
        after=after,
        forget=withdrawn,
        heldout=heldout,
        target=str(config.get("unlearn-target", run.unlearn_target)),
        target_fr=float(config.get("target-fr", run.target_fr)),
    )
    metrics = {**result.metrics, **report.metrics(), "num-decoys": int(decoy_ids.size)}
    return dataclasses.replace(result, metrics=metrics)


def decoys(setup: ClientSetup, request_ids: list[str], num_forget: int) -> np.ndarray:
    """Ids of the retained training samples that pad a forget set of ``num_forget`` samples up to
    ``min-forget-samples`` (none when it is that large already; fewer when the device holds fewer).

    Seeded by the run seed, the partition and the request ids, so every unlearning round of a
    request mixes the same samples (new decoys each round would let rounds be compared).
    """
    missing = setup.config.min_forget_samples - num_forget
    pool = setup.device.training_data().train_ids  # tombstoned (withdrawn) samples are not in it
    if missing <= 0 or pool.size == 0:
        return np.empty(0, dtype=np.int64)
    digest = hashlib.sha256("\n".join(sorted(request_ids)).encode()).digest()
    rng = np.random.default_rng([setup.config.seed, setup.partition_id, int.from_bytes(digest[:8], "big")])
    return np.sort(rng.choice(pool, size=min(missing, pool.size), replace=False))


def _trainable_delta(model: torch.nn.Module, delta: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    return {k: v.detach().cpu().numpy() for k, v in delta.items() if k in names}


def _norm_bound(setup: ClientSetup) -> float:
    squared = sum(float(p.detach().double().square().sum()) for p in setup.model.parameters())
    return NORM_SHARE * setup.config.max_mask_ratio * math.sqrt(squared)


def _forsaken(
    setup: ClientSetup,
    config: ConfigRecord,
    forget: tuple[np.ndarray, np.ndarray],
    oracle: MembershipOracle,
    *,
    retained: ClientData,
    reference: tuple[np.ndarray, np.ndarray],
) -> ClientDelta:
    """Forsaken steered by ``oracle`` (the device's own), on ``retained`` (decoys already left out),
    with ``reference`` as its never-seen samples."""
    run = setup.config
    # The guard's baseline: from the server (what this device reported in the attempt's first round),
    # so the accuracy budget bounds the whole withdrawal, not each unlearning round.
    baseline = None
    if all(guard_name(key) in config for key in forsaken.GUARDED):
        baseline = {key: float(config[guard_name(key)]) for key in forsaken.GUARDED}
    result = unlearn_on_device(
        setup.model,
        forget=forget,
        reference=reference,
        retained=(retained.x_train, retained.y_train),
        run_seed=run.seed,
        server_round=setup.server_round,
        partition_id=setup.partition_id,
        retain_samples=run.retain_samples,
        target=str(config.get("unlearn-target", run.unlearn_target)),
        target_fr=float(config.get("target-fr", run.target_fr)),
        max_steps=int(config.get("forsaken-steps", run.forsaken_steps)),
        oracle=oracle,
        accuracy_baseline=baseline,
    )
    guard = baseline if baseline is not None else {key: result.history[0][key] for key in forsaken.GUARDED}
    metrics = {
        **{guard_name(key): float(value) for key, value in guard.items()},
        "steps": result.steps,
        "client-seconds": result.seconds,
        "neurons-touched": result.neurons_touched,
        "touched-fraction": result.touched_fraction,
    }
    mask = {name: delta.detach().cpu().numpy() for name, delta in result.mask.items()}
    return ClientDelta(mask, metrics, result.stopped_because)


def _ascent_seed(setup: ClientSetup) -> int:
    return setup.config.seed * 7_919 + setup.server_round * 31 + setup.partition_id


def _gradient_ascent(setup: ClientSetup, forget: tuple[np.ndarray, np.ndarray]) -> ClientDelta:
    run = setup.config
    ascent = AscentConfig(
        learning_rate=ASCENT_LEARNING_RATE,
        max_steps=run.ascent_steps,
        batch_size=run.batch_size,
        max_norm=_norm_bound(setup),
        seed=_ascent_seed(setup),
    )
    outcome = ascent_delta(setup.model, forget, ascent)
    return ClientDelta(
        _trainable_delta(setup.model, outcome.delta),
        {**_ascent_metrics(outcome.history, outcome.seconds), "loss-ceiling": outcome.loss_ceiling},
        outcome.stopped_because,
    )


def _pga(setup: ClientSetup, forget: tuple[np.ndarray, np.ndarray]) -> ClientDelta:
    from fedforget import models

    run = setup.config
    info = setup.info
    name = models.resolve_model_name(run.model, info)
    state = {k: v.detach().clone() for k, v in setup.model.state_dict().items()}
    probe = PGAConfig(seed=_ascent_seed(setup))

    def factory(seed: int) -> torch.nn.Module:
        return models.build_model(name, info, seed=seed)

    from fedforget.baselines.pga import default_radius

    radius = min(
        default_radius(setup.model, factory, probe.radius_fraction, probe.num_random, probe.seed),
        _norm_bound(setup),
    )
    config = PGAConfig(
        learning_rate=ASCENT_LEARNING_RATE,
        max_steps=run.ascent_steps,
        batch_size=run.batch_size,
        radius=radius,
        seed=probe.seed,
    )
    # w_ref = w: client weight 0 of total 1 (module docstring), start point w_i := w.
    outcome = pga_delta(
        setup.model, state, forget, client_weight=0.0, total_weight=1.0, factory=factory, config=config
    )
    metrics = {
        **_ascent_metrics(outcome.history, outcome.seconds),
        "radius": outcome.radius,
        "stop-accuracy": outcome.stop_accuracy,
    }
    return ClientDelta(_trainable_delta(setup.model, outcome.delta), metrics, outcome.stopped_because)


def _ascent_metrics(history: list[dict[str, Any]], seconds: float) -> dict[str, float]:
    last = history[-1]
    return {
        "steps": len(history) - 1,
        "client-seconds": seconds,
        "forget-loss": float(last.get("forget-loss", float("nan"))),
    }
