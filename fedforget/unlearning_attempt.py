"""One unlearning attempt: the loop that the Flower server and the in-process benchmarks both run.

An *attempt* unlearns one batch of withdrawal requests held by one or more devices (the *owners*:
node ids on the server, partition ids in a simulation) over at most ``rounds`` rounds. Round ``r``:

1. every live owner ``k`` is asked for its delta ``m_k^r`` on the current model
   (:meth:`AttemptTransport.ask_for_masks`). Its first accepted reply's ``guard-*`` metrics (the
   method's accuracies before the attempt) go back to it in every later round, so an accuracy budget
   bounds the whole attempt, not each round;
2. every returned delta is checked (:meth:`AttemptTransport.validate`), and so is the sum of every
   delta the owner sent in this attempt, against the model before it. An owner whose reply is an
   error, missing, or rejected *fails*: every delta it sent in this attempt leaves the model and its
   requests stay open (all-or-nothing per owner);
3. the model is ``w^r = w_before + sum_{k not failed} sum_{s <= r} m_k^s`` (each device's delta is
   its whole change for its own forget set, so the deltas are summed, not averaged);
4. the transport measures ``w^r`` (:meth:`AttemptTransport.measure`: test accuracy, the judge's FR and
   AUC, ...) and the round's row is logged;
5. the attempt stops when every owner that answered says its own steering oracle finds the target
   met (``steer-target-met = 1`` in its reply, :mod:`fedforget.steer`), or when every accepted delta
   was zero and nobody failed this round (event ``unlearning-stalled``: the next round would start
   from the same model with the same seeds and repeat it).

**The judge is never the steer**: what the transport's :meth:`~AttemptTransport.measure` reports (the
judge's numbers) is logged, never read by this loop -- not to stop, and not to pick a round to keep
(choosing the round the judge liked best would make the judge a steer). The attempt ends with its
last round's model; each device already returns, within its round, the state its own oracle judged
best. The transport decides how masks are asked for and how rounds are measured:
``server/unlearning.py`` over the Flower Grid, ``simulations/forsaken_rounds.py`` in process; both
run this one loop.

No Flower here. A model is a ``state_dict`` (``dict[str, torch.Tensor]``).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Hashable, Mapping, Sequence
from typing import Any, Generic, Protocol, TypeVar

import numpy as np
import torch

__all__ = [
    "AttemptResult",
    "AttemptTransport",
    "MaskReply",
    "MaskRound",
    "apply_masks",
    "run_attempt",
]

Owner = TypeVar("Owner", bound=Hashable)
State = dict[str, torch.Tensor]


@dataclasses.dataclass(frozen=True)
class MaskReply:
    """One owner's answer: its delta (parameter name -> array) and the scalar metrics it reports."""

    mask: dict[str, np.ndarray]
    metrics: Mapping[str, float]


@dataclasses.dataclass
class MaskRound(Generic[Owner]):
    """What asking the owners gave: ``replies``, ``failures`` (owner -> reason), and ``fields`` the
    transport adds to the round's row (e.g. bytes sent)."""

    replies: dict[Owner, MaskReply]
    failures: dict[Owner, str] = dataclasses.field(default_factory=dict)
    fields: dict[str, Any] = dataclasses.field(default_factory=dict)


class AttemptTransport(Protocol[Owner]):
    """How an attempt talks to the owners and judges its rounds (the Flower Grid, or in process)."""

    def ask_for_masks(
        self,
        state: State,
        owners: Sequence[Owner],
        *,
        unlearn_round: int,
        guards: Mapping[Owner, Mapping[str, float]],
    ) -> MaskRound[Owner]:
        """Ask each of ``owners`` for its delta on the model ``state``; ``guards[owner]``: the
        ``guard-*`` metrics to send back (empty in the first round)."""

    def validate(self, mask: Mapping[str, np.ndarray], state: State) -> None:
        """Raise ``ValueError`` (with a one-line reason) unless ``mask`` may be added to ``state``."""

    def measure(self, state: State, *, unlearn_round: int) -> dict[str, Any]:
        """The round's measurements on the model ``state`` (the judge's): logged, never read here."""

    def log(self, row: dict[str, Any], *, event: str | None = None) -> None:
        """Record a round's row (``event`` None) or an event (``mask-rejected``, ``unlearning-stalled``)."""


@dataclasses.dataclass
class AttemptResult(Generic[Owner]):
    """The attempt's outcome: the model, who took part to the end, who failed and why."""

    state: State
    done: list[Owner]
    failed: dict[Owner, str]
    last: dict[str, Any]
    """The last round's row (``{}`` when no round was measured)."""
    rows: list[dict[str, Any]]
    """Every round's row, in order."""
    steer_target_met: bool
    """Whether the last round ended the attempt because every device's steer said the target was met."""
    client_seconds: float
    seconds: float
    """Wall time of the attempt (asking, validating, applying, measuring)."""


def apply_masks(state: Mapping[str, torch.Tensor], masks: Sequence[Mapping[str, np.ndarray]]) -> State:
    """``w + sum_k m_k`` for every masked parameter (others, and buffers, unchanged)."""
    out = {name: value.clone() for name, value in state.items()}
    for mask in masks:
        for name, delta in mask.items():
            out[name] = out[name] + torch.as_tensor(delta, dtype=out[name].dtype)
    return out


def _l2(masks: Sequence[Mapping[str, np.ndarray]]) -> float:
    return math.sqrt(sum(float(np.square(d, dtype=np.float64).sum()) for m in masks for d in m.values()))


def _lowest(metrics: Sequence[Mapping[str, float]], key: str) -> float | None:
    values = [float(m[key]) for m in metrics if key in m and math.isfinite(float(m[key]))]
    return min(values) if values else None


def _farthest_from_half(metrics: Sequence[Mapping[str, float]]) -> float | None:
    values = [float(m["steer-auc"]) for m in metrics if math.isfinite(float(m.get("steer-auc", "nan")))]
    return max(values, key=lambda v: abs(v - 0.5)) if values else None


def run_attempt(
    transport: AttemptTransport[Owner],
    *,
    state_before: Mapping[str, torch.Tensor],
    owners: Sequence[Owner],
    rounds: int,
) -> AttemptResult[Owner]:
    """Run one attempt (module docstring) from the model ``state_before``; ``state_before`` is not changed.

    The target (``unlearn-target``, ``target-fr``) is the devices' business: the transport sends it,
    and each device reports with its own oracle whether it is met."""
    if rounds < 1:
        raise ValueError(f"an attempt needs at least one round, got rounds={rounds}")
    started = time.perf_counter()
    base = {name: value.clone() for name, value in state_before.items()}
    state = {name: value.clone() for name, value in base.items()}
    applied: dict[Owner, dict[str, np.ndarray]] = {}  # owner -> the sum of its accepted deltas
    failed: dict[Owner, str] = {}
    guards: dict[Owner, dict[str, float]] = {}
    rows: list[dict[str, Any]] = []
    row: dict[str, Any] = {}
    client_seconds = 0.0
    steered = False
    for unlearn_round in range(1, rounds + 1):
        live = [o for o in owners if o not in failed]
        if not live:
            break
        failed_before = len(failed)
        asked = transport.ask_for_masks(
            state, live, unlearn_round=unlearn_round, guards={o: guards.get(o, {}) for o in live}
        )
        accepted: list[dict[str, np.ndarray]] = []
        steer: list[Mapping[str, float]] = []
        for owner in live:
            reply = asked.replies.get(owner)
            reason = asked.failures.get(owner)
            if reply is None and reason is None:
                reason = "no reply"
            total: dict[str, np.ndarray] = {}
            if reply is not None and reason is None:
                total = {name: np.array(delta, copy=True) for name, delta in applied.get(owner, {}).items()}
                for name, delta in reply.mask.items():
                    total[name] = total[name] + delta if name in total else np.array(delta, copy=True)
                try:
                    transport.validate(reply.mask, state)
                    if owner in applied:  # the owner's whole change in this attempt, against the start
                        transport.validate(total, base)
                except ValueError as error:
                    reason = str(error)
            if reason is not None:
                failed[owner] = reason
                transport.log({"node": owner, "reason": reason}, event="mask-rejected")
                continue
            assert reply is not None
            accepted.append(reply.mask)
            steer.append(reply.metrics)
            guard = {k: float(v) for k, v in reply.metrics.items() if k.startswith("guard-")}
            guards.setdefault(owner, guard)
            client_seconds += float(reply.metrics.get("client-seconds", 0.0))
            applied[owner] = total
        for owner in failed:
            applied.pop(owner, None)
        state = apply_masks(base, list(applied.values()))
        steered = bool(steer) and all(float(m.get("steer-target-met", 0.0)) == 1.0 for m in steer)
        row = {
            "unlearn-round": unlearn_round,
            "masks-accepted": len(accepted),
            "masks-rejected": len(live) - len(accepted),
            "mask-l2": _l2(accepted),
            "mask-nonzero": int(sum(int(np.count_nonzero(d)) for m in accepted for d in m.values())),
            "client-seconds": sum(
                float(reply.metrics.get("client-seconds", 0.0))
                for owner, reply in asked.replies.items()
                if owner not in failed
            ),
            "steer-fr": _lowest(steer, "steer-fr"),
            "steer-auc": _farthest_from_half(steer),
            "steer-target-met": steered,
            **asked.fields,
        }
        row.update(transport.measure(state, unlearn_round=unlearn_round))
        rows.append(row)
        transport.log(row)
        if steered:
            break
        if accepted and row["mask-nonzero"] == 0 and len(failed) == failed_before:
            transport.log({"unlearn-round": unlearn_round}, event="unlearning-stalled")
            break
    done = [o for o in owners if o not in failed]
    return AttemptResult(
        state=state,
        done=done,
        failed=failed,
        last=row,
        rows=rows,
        steer_target_met=steered,
        client_seconds=client_seconds,
        seconds=time.perf_counter() - started,
    )
