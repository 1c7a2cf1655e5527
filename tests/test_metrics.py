"""Tests for fedforget.metrics: forgetting rate, AUC, accuracy, the retrain reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score
from torch import nn

from fedforget.data import load_dataset
from fedforget.metrics import (
    ForgettingRate,
    accuracy,
    attack_auc,
    decisions_by_id,
    forgetting_rate,
    forgetting_rate_from_arrays,
    oracle_report,
    retrain_reference,
)
from fedforget.mia import MembershipOracle
from fedforget.mia.features import features_from_logits, model_logits
from fedforget.models import build_model
from fedforget.training import evaluate, train

T, F = True, False


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models: one intra-op thread is as fast, and far faster when the CPUs are oversubscribed."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# ------------------------------------------------------------------------------ forgetting rate
def test_forgetting_rate_known_answer() -> None:
    before = {10: T, 11: T, 12: T, 13: F}
    after = {10: F, 11: F, 12: T, 13: F}
    result = forgetting_rate(before, after)
    # B_T = 3 (10, 11, 12), B_F = 1 (13), A_F = 3 (10, 11, 13), A_T = 1 (12): FR = (3 - 1) / 3
    assert result == ForgettingRate(fr=2 / 3, b_t=3, b_f=1, a_f=3, a_t=1, n=4)


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        ({1: T, 2: T}, {1: F, 2: F}, 1.0),  # everything memorised is forgotten
        ({1: T, 2: T}, {1: T, 2: T}, 0.0),  # nothing changed
        ({1: T, 2: F}, {1: F, 2: T}, 0.0),  # one flip each way: net zero
        ({1: T, 2: F, 3: F}, {1: T, 2: T, 3: T}, -2.0),  # more members after: (0 - 2) / 1
        ({1: T, 2: T, 3: T, 4: T}, {1: F, 2: T, 3: T, 4: T}, 0.25),
    ],
)
def test_forgetting_rate_cases(before: dict, after: dict, expected: float) -> None:
    assert forgetting_rate(before, after).fr == pytest.approx(expected)


def test_no_member_before_gives_nan_not_an_error() -> None:
    result = forgetting_rate({1: F, 2: F}, {1: F, 2: T})
    assert math.isnan(result.fr)
    assert (result.b_t, result.b_f, result.a_f, result.a_t, result.n) == (0, 2, 1, 1, 2)
    assert result.to_dict()["fr"] is None


def test_mismatched_ids_name_the_ids() -> None:
    with pytest.raises(
        ValueError, match=r"judged before but not after \(3\).*judged after but not before \(7\)"
    ):
        forgetting_rate({1: T, 2: T, 3: F}, {1: T, 2: F, 7: F})
    many = {i: T for i in range(20)}
    with pytest.raises(
        ValueError, match=r"12 id\(s\) judged before but not after \(8, 9, 10, 11, 12, \.\.\.\)"
    ):
        forgetting_rate(many, {i: T for i in range(8)})


def test_empty_and_bad_values() -> None:
    with pytest.raises(ValueError, match="empty"):
        forgetting_rate({}, {})
    with pytest.raises(TypeError, match="expected a bool"):
        forgetting_rate({1: "yes"}, {1: T})
    with pytest.raises(TypeError, match="expected a bool"):
        forgetting_rate({1: 0.7}, {1: T})
    with pytest.raises(TypeError, match="integer id"):
        forgetting_rate({1.5: T}, {1.5: T})
    with pytest.raises(TypeError, match="mapping"):
        forgetting_rate([T, F], [T, F])  # type: ignore[arg-type]


def test_ids_and_values_in_other_spellings() -> None:
    before = {np.int64(5): np.bool_(True), 6: 1, "7": True}
    after = {"5": False, np.int32(6): 0, 7: np.True_}
    assert forgetting_rate(before, after) == ForgettingRate(fr=2 / 3, b_t=3, b_f=0, a_f=2, a_t=1, n=3)
    with pytest.raises(ValueError, match="twice"):
        forgetting_rate({5: T, "5": T}, {5: T})


def test_forgetting_rate_from_arrays() -> None:
    ids = np.array([40, 41, 42, 43])
    result = forgetting_rate_from_arrays(ids, np.array([T, T, T, F]), np.array([F, F, T, F]))
    assert result.fr == pytest.approx(2 / 3) and result.n == 4
    assert decisions_by_id([3, 1], [True, False]) == {3: True, 1: False}
    with pytest.raises(ValueError, match="2 ids but 3 decisions"):
        decisions_by_id([1, 2], [T, F, T])
    with pytest.raises(ValueError, match="repeated sample ids: 2"):
        decisions_by_id([1, 2, 2], [T, F, T])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=40))
def test_forgetting_rate_matches_brute_force(pairs: list[tuple[bool, bool]]) -> None:
    before = {i: b for i, (b, _) in enumerate(pairs)}
    after = {i: a for i, (_, a) in enumerate(pairs)}
    result = forgetting_rate(before, after)
    b_t = sum(b for b, _ in pairs)
    b_f = len(pairs) - b_t
    a_f = sum(not a for _, a in pairs)
    assert (result.b_t, result.b_f, result.a_f, result.n) == (b_t, b_f, a_f, len(pairs))
    assert result.a_t + result.a_f == result.n
    if b_t:
        assert result.fr == pytest.approx((a_f - b_f) / b_t)
        assert -b_f / b_t - 1e-12 <= result.fr <= 1.0 + 1e-12
    else:
        assert math.isnan(result.fr)


# ------------------------------------------------------------------------------------- AUC
def test_attack_auc_hand_computed() -> None:
    # pairs (forget, reference): (0.9, 0.4) 1, (0.9, 0.1) 1, (0.4, 0.4) 0.5, (0.4, 0.1) 1, twice for
    # the two 0.4s -> (1 + 1 + 0.5 + 1 + 0.5 + 1) / 6 = 5/6
    assert attack_auc([0.9, 0.4, 0.4], [0.4, 0.1]) == pytest.approx(5 / 6)
    assert attack_auc([1, 2, 3], [1, 2, 3]) == pytest.approx(0.5)
    assert attack_auc([5, 6], [1, 2]) == 1.0
    assert attack_auc([1, 2], [5, 6]) == 0.0
    with pytest.raises(ValueError, match="empty"):
        attack_auc([], [1.0])
    with pytest.raises(ValueError, match="NaN"):
        attack_auc([float("nan")], [1.0])


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.integers(0, 5), min_size=1, max_size=30),
    st.lists(st.integers(0, 5), min_size=1, max_size=30),
)
def test_attack_auc_matches_sklearn(forget: list[int], reference: list[int]) -> None:
    expected = roc_auc_score([1] * len(forget) + [0] * len(reference), forget + reference)
    assert attack_auc(forget, reference) == pytest.approx(expected)


# ------------------------------------------------------------------------- accuracy, retrain
class ConfidenceOracle(MembershipOracle):
    """Member iff the true-class confidence is at least ``threshold`` (a simple stand-in oracle)."""

    name = "confidence"

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold

    def scores(self, model: nn.Module, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return features_from_logits(model_logits(model, x), y)[:, 11]

    def to_state(self):  # pragma: no cover - not used
        return {}, {"name": self.name, "threshold": self.threshold}

    @classmethod
    def from_state(cls, arrays, config, model_factory):  # pragma: no cover - not used
        return cls(config["threshold"])


def test_accuracy_is_evaluate_accuracy() -> None:
    digits = load_dataset("digits")
    model = build_model("mlp", digits.info, seed=0)
    assert (
        accuracy(model, digits.x_test, digits.y_test)
        == evaluate(model, digits.x_test, digits.y_test).accuracy
    )


def test_retrain_reference_forgets_what_the_original_memorised() -> None:
    memorise = load_dataset("memorise")  # synthetic: small MLP targets overfit it strongly
    x, y = memorise.x_train, memorise.y_train
    retain, forget, reference = np.arange(0, 200), np.arange(200, 260), np.arange(300, 400)
    factory = lambda: build_model("mlp", memorise.info)  # noqa: E731
    recipe = dict(epochs=20, learning_rate=0.05, batch_size=16, momentum=0.9, weight_decay=0.0)
    oracle = ConfidenceOracle(0.99)
    original = build_model("mlp", memorise.info, seed=0)
    trained_on = np.concatenate([retain, forget])
    train(original, x[trained_on], y[trained_on], seed=0, **recipe)
    before = oracle_report(
        oracle, original, x[forget], y[forget], x[reference], y[reference], forget_ids=forget
    )
    assert before.attack_auc > 0.85  # measured 0.976-0.993 (seeds 0-2)
    assert before.forgetting_rate is None and set(before.decisions) == set(forget.tolist())

    ref = retrain_reference(
        factory,
        x[retain],
        y[retain],
        x[forget],
        y[forget],
        x[reference],
        y[reference],
        oracle,
        forget_ids=forget,
        before=before.decisions,
        seed=0,
        **recipe,
    )
    assert set(ref.decisions) == set(forget.tolist())
    fr = ref.forgetting_rate
    assert fr is not None and fr.n == len(forget) and fr.b_t == sum(before.decisions.values())
    assert fr.fr > 0.6  # measured 1.00 (seeds 0-2): the retrained model no longer "remembers" them
    assert abs(ref.attack_auc - 0.5) < 0.12  # measured 0.43-0.46: the forget set looks like unseen data
    # like never-seen rows: above chance (1/30; it learned the weak signal from 200 rows) and far below
    # the original's 1.0 on them; measured forget 0.23-0.33, reference 0.35-0.43 (seeds 0-2)
    assert 0.1 < ref.forget_accuracy < 0.6 and 0.1 < ref.reference_accuracy < 0.6
    again = retrain_reference(
        factory, x[retain], y[retain], x[forget], y[forget], x[reference], y[reference], oracle,
        forget_ids=forget, before=before.decisions, seed=0, **recipe,
    )  # fmt: skip
    assert np.array_equal(again.report.scores_forget, ref.report.scores_forget)
    assert ref.to_dict()["forgetting_rate"]["n"] == len(forget)
    with pytest.raises(ValueError, match="empty"):
        retrain_reference(factory, x[:0], y[:0], x[forget], y[forget], x[reference], y[reference], oracle)
