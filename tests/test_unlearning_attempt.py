"""The one unlearning-attempt loop (fedforget/unlearning_attempt.py) with a scripted transport."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest
import torch

from fedforget.unlearning_attempt import MaskReply, MaskRound, apply_masks, run_attempt


class Scripted:
    """Each owner sends ``plan[owner][round - 1]`` (a number: the mask value, or a str: a failure);
    an owner's steer says the target is met from round ``met[owner]`` on; the judge (``measure``)
    reports FR = the weight's value, or ``judge_fr`` when given."""

    def __init__(
        self,
        plan: dict[int, list[Any]],
        max_abs: float = 10.0,
        met: dict[int, int] | None = None,
        judge_fr: float | None = None,
    ) -> None:
        self.plan, self.max_abs, self.met, self.judge_fr = plan, max_abs, met or {}, judge_fr
        self.events: list[tuple[str | None, dict[str, Any]]] = []
        self.guards_seen: list[dict[int, dict[str, float]]] = []

    def ask_for_masks(
        self,
        state: dict[str, torch.Tensor],
        owners: Sequence[int],
        *,
        unlearn_round: int,
        guards: Mapping[int, Mapping[str, float]],
    ) -> MaskRound[int]:
        self.guards_seen.append({o: dict(g) for o, g in guards.items()})
        replies, failures = {}, {}
        for owner in owners:
            step = self.plan[owner][unlearn_round - 1]
            if isinstance(step, str):
                failures[owner] = step
            else:
                met = unlearn_round >= self.met.get(owner, 99)
                metrics = {
                    "guard-retain-acc": 0.9 + unlearn_round,
                    "client-seconds": 1.0,
                    "steer-fr": 0.5,
                    "steer-target-met": float(met),
                }
                replies[owner] = MaskReply({"w": np.full(1, step, dtype=np.float32)}, metrics)
        return MaskRound(replies, failures, {"bytes-down": 8})

    def validate(self, mask: Mapping[str, np.ndarray], state: dict[str, torch.Tensor]) -> None:
        if abs(float(mask["w"][0])) > self.max_abs:
            raise ValueError("mask too large")

    def measure(self, state: dict[str, torch.Tensor], *, unlearn_round: int) -> dict[str, Any]:
        return {"fr": float(state["w"][0]) if self.judge_fr is None else self.judge_fr}

    def log(self, row: dict[str, Any], *, event: str | None = None) -> None:
        self.events.append((event, dict(row)))


def attempt(transport: Scripted, owners: list[int], rounds: int = 3) -> Any:
    return run_attempt(
        transport,
        state_before={"w": torch.zeros(1), "buffer": torch.ones(1)},
        owners=owners,
        rounds=rounds,
    )


def test_masks_of_several_owners_are_summed_and_the_devices_steer_stops_the_attempt() -> None:
    transport = Scripted({1: [0.25, 0.25, 0.25], 2: [0.25, 0.25, 0.25]}, met={1: 1, 2: 2})
    result = attempt(transport, [1, 2])
    assert [r["fr"] for r in result.rows] == [0.5, 1.0]  # stopped at round 2: both steers say "met"
    assert [r["steer-target-met"] for r in result.rows] == [False, True] and result.steer_target_met
    assert result.done == [1, 2] and result.failed == {}
    assert float(result.state["w"][0]) == 1.0 and float(result.state["buffer"][0]) == 1.0
    assert result.rows[0]["bytes-down"] == 8 and result.rows[0]["masks-accepted"] == 2


def test_the_first_rounds_guards_go_back_to_each_owner() -> None:
    transport = Scripted({1: [0.1, 0.1, 0.1]})
    attempt(transport, [1])
    assert transport.guards_seen[0] == {1: {}}
    assert transport.guards_seen[1] == {1: {"guard-retain-acc": 1.9}}
    assert transport.guards_seen[2] == {1: {"guard-retain-acc": 1.9}}  # round 1's, not round 2's


def test_a_failing_owner_takes_every_mask_it_sent_out_of_the_model() -> None:
    transport = Scripted({1: [0.2, 0.2, 0.2], 2: [0.3, "died", 0.3]})
    result = attempt(transport, [1, 2])
    assert result.failed == {2: "died"} and result.done == [1]
    assert float(result.state["w"][0]) == pytest.approx(0.6)  # owner 1's three masks only
    assert ("mask-rejected", {"node": 2, "reason": "died"}) in transport.events


def test_a_rejected_mask_fails_its_owner() -> None:
    transport = Scripted({1: [100.0, 0.1, 0.1]}, max_abs=10.0)
    result = attempt(transport, [1])
    assert result.failed == {1: "mask too large"} and result.done == []
    assert float(result.state["w"][0]) == 0.0


def test_zero_masks_stall_the_attempt() -> None:
    transport = Scripted({1: [0.0, 0.5, 0.5]})
    result = attempt(transport, [1])
    assert len(result.rows) == 1
    assert [e for e, _ in transport.events] == [None, "unlearning-stalled"]


def test_the_judge_never_stops_the_attempt_nor_picks_its_round() -> None:
    """The judge says FR 1.0 every round; no device's steer says the target is met: all rounds run."""
    transport = Scripted({1: [0.6, -0.4, 0.1]}, judge_fr=1.0)
    result = attempt(transport, [1], rounds=3)
    assert len(result.rows) == 3 and not result.steer_target_met
    # the last round's model, not the one after round 1 (which a judge-picked "best round" would keep)
    assert float(result.state["w"][0]) == pytest.approx(0.3)
    assert "unlearning-kept-round" not in [e for e, _ in transport.events]


def test_apply_masks_leaves_the_input_alone() -> None:
    state = {"w": torch.zeros(2)}
    out = apply_masks(state, [{"w": np.ones(2, dtype=np.float32)}, {"w": np.ones(2, dtype=np.float32)}])
    assert out["w"].tolist() == [2.0, 2.0] and state["w"].tolist() == [0.0, 0.0]


def test_at_least_one_round() -> None:
    with pytest.raises(ValueError, match="at least one round"):
        attempt(Scripted({1: []}), [1], rounds=0)


def test_the_target_steer_of_every_live_owner_is_needed() -> None:
    transport = Scripted({1: [0.1, 0.1, 0.1], 2: [0.1, 0.1, 0.1]}, met={1: 1})
    result = attempt(transport, [1, 2])
    assert len(result.rows) == 3 and not result.steer_target_met
