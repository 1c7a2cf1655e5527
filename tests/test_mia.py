"""Tests for the membership oracles (fedforget.mia): features, shadows, Shokri, LiRA, state, strength."""

from __future__ import annotations

import dataclasses
import io
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from fedforget.data import load_dataset
from fedforget.mia import KINDS, MembershipOracle, check_state, fit_oracle, oracle_from_state
from fedforget.mia.features import (
    NUM_FEATURES,
    PHI_CLIP,
    TOP_K,
    features_from_logits,
    features_from_probs,
    model_logits,
    phi_from_logits,
)
from fedforget.mia.lira import LiraOracle
from fedforget.mia.shadow import in_masks, train_shadows
from fedforget.mia.shokri import DEFAULT_MODE, ShokriOracle
from fedforget.mia.strength import (
    attack_strength,
    auc,
    roc_curve,
    strength_from_scores,
    tpr_at_fpr,
    youden_threshold,
)
from fedforget.models import build_model
from fedforget.training import train

RECIPE = dict(epochs=30, learning_rate=0.05, batch_size=32, momentum=0.9, weight_decay=0.0)
N = 300  # members, non-members and each "unseen" set; the auxiliary data has 2 * N


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models: one intra-op thread is as fast, and far faster when the CPUs are oversubscribed."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@dataclasses.dataclass
class Setup:
    factory: object
    target: nn.Module
    x: np.ndarray
    y: np.ndarray
    members: np.ndarray
    nonmembers: np.ndarray
    unseen: np.ndarray
    aux: np.ndarray
    shadows: list
    oracles: dict[str, MembershipOracle]


@pytest.fixture(scope="module")
def setup() -> Setup:
    """An MLP overfitted on 300 memorise samples (synthetic), 4 shadows on 600 disjoint ones, the three
    oracles."""
    data = load_dataset("memorise")
    x, y = data.x_train, data.y_train
    order = np.random.default_rng(0).permutation(len(y))
    members, nonmembers, unseen = order[:N], order[N : 2 * N], order[2 * N : 3 * N]
    aux = order[3 * N : 5 * N]

    def factory() -> nn.Module:
        return build_model("mlp", data.info)

    target = build_model("mlp", data.info, seed=1)
    train(target, x[members], y[members], seed=1, **RECIPE)
    shadows = train_shadows(factory, x[aux], y[aux], num_shadows=4, seed=0, **RECIPE)
    oracles = {
        "shokri-global": fit_oracle("shokri", factory, x[aux], y[aux], mode="global", shadows=shadows),
        "shokri-per-class": fit_oracle("shokri", factory, x[aux], y[aux], mode="per-class", shadows=shadows),
        "lira": fit_oracle("lira", factory, x[aux], y[aux], shadows=shadows),
    }
    return Setup(factory, target, x, y, members, nonmembers, unseen, aux, shadows, oracles)


ORACLE_NAMES = ("shokri-global", "shokri-per-class", "lira")


# ---------------------------------------------------------------------------------- features
def test_features_known_answer() -> None:
    logits = np.array([[2.0, 1.0, 0.0], [0.0, 0.0, 3.0]])
    y = np.array([0, 1])
    feats = features_from_logits(logits, y)
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert feats.shape == (2, NUM_FEATURES) == (2, TOP_K + 3)
    np.testing.assert_allclose(feats[:, :3], -np.sort(-p, axis=1))
    assert np.all(feats[:, 3:TOP_K] == 0)  # padded: 3 classes < 10
    np.testing.assert_allclose(feats[:, TOP_K], -np.log(p[[0, 1], y]))
    np.testing.assert_allclose(feats[:, TOP_K + 1], p[[0, 1], y])
    np.testing.assert_allclose(feats[:, TOP_K + 2], np.log(p[[0, 1], y] / (1 - p[[0, 1], y])))
    np.testing.assert_allclose(features_from_probs(p, y), feats, rtol=1e-9, atol=1e-12)


def test_features_keep_top_ten_and_stay_finite() -> None:
    logits = np.arange(30.0)[None, :].repeat(2, axis=0)
    feats = features_from_logits(logits, np.array([29, 0]))
    assert np.all(np.diff(feats[:, :TOP_K], axis=1) <= 0)  # sorted, 10 of 30 kept
    huge = np.array([[1000.0, 0.0], [0.0, 1000.0]])
    phi = phi_from_logits(huge, np.array([0, 0]))
    assert phi.tolist() == [PHI_CLIP, -PHI_CLIP]  # p_y == 1 and 0 in float64, still finite
    assert np.all(np.isfinite(features_from_logits(huge, np.array([0, 0]))))
    assert np.all(np.isfinite(features_from_probs(np.array([[1.0, 0.0]]), np.array([1]))))
    with pytest.raises(ValueError, match="label 2 outside"):
        features_from_logits(np.zeros((1, 2)), np.array([2]))


def test_model_logits_checks_the_shape_and_keeps_the_mode() -> None:
    digits = load_dataset("digits")
    model = build_model("mlp", digits.info, seed=0)
    model.train()
    out = model_logits(model, digits.x_test[:5])
    assert out.shape == (5, 10) and out.dtype == np.float64 and model.training
    with pytest.raises(ValueError, match=r"shape \(446,\) but the model \(MLP\) expects \(64,\)"):
        model_logits(model, np.zeros((3, 446), dtype=np.float32))


# ----------------------------------------------------------------------------------- shadows
@pytest.mark.parametrize("num_shadows", [1, 3, 4, 8])
def test_in_masks_are_random_halves_balanced_per_sample(num_shadows: int) -> None:
    masks = in_masks(1000, num_shadows, seed=3)
    assert masks.shape == (num_shadows, 1000) and masks.dtype == bool
    assert np.all(np.abs(masks.mean(axis=1) - 0.5) < 0.06)  # each shadow: about half
    per_sample = masks.sum(axis=0)
    assert set(np.unique(per_sample)) <= {num_shadows // 2, (num_shadows + 1) // 2}
    assert np.array_equal(masks, in_masks(1000, num_shadows, seed=3))
    assert not np.array_equal(masks, in_masks(1000, num_shadows, seed=4))


def test_shadows_train_on_their_half(setup: Setup) -> None:
    assert len(setup.shadows) == 4
    for shadow in setup.shadows:
        assert len(shadow.in_mask) == len(setup.aux)
        x, y = setup.x[setup.aux], setup.y[setup.aux]
        inside = (model_logits(shadow.model, x[shadow.in_mask]).argmax(1) == y[shadow.in_mask]).mean()
        outside = (model_logits(shadow.model, x[~shadow.in_mask]).argmax(1) == y[~shadow.in_mask]).mean()
        assert inside > 0.95 and outside < inside - 0.2  # overfitted like the target


def test_train_shadows_rejects_bad_input() -> None:
    digits = load_dataset("digits")
    factory = lambda: build_model("mlp", digits.info)  # noqa: E731
    x, y = digits.x_train, digits.y_train
    with pytest.raises(ValueError, match="at least 20"):
        train_shadows(factory, x[:10], y[:10], epochs=1)
    with pytest.raises(ValueError, match="num_shadows must be >= 1"):
        train_shadows(factory, x[:100], y[:100], num_shadows=0, epochs=1)
    with pytest.raises(ValueError, match="empty"):
        train_shadows(factory, x[:0], y[:0], epochs=1)
    with pytest.raises(ValueError, match="100 samples but 99 labels"):
        train_shadows(factory, x[:100], y[:99], epochs=1)
    with pytest.raises(ValueError, match="expects"):
        train_shadows(factory, np.zeros((100, 446), np.float32), y[:100], epochs=1)


# ---------------------------------------------------------------------------- attack strength
@pytest.mark.parametrize("name", ORACLE_NAMES)
def test_oracle_separates_members_of_an_overfitted_model(setup: Setup, name: str) -> None:
    oracle = setup.oracles[name]
    x, y = setup.x, setup.y
    result = attack_strength(oracle, setup.target, x[setup.members], y[setup.members], x[setup.nonmembers],
                             y[setup.nonmembers])  # fmt: skip
    # Measured (target: train acc 1.0, non-member acc 0.41): AUC 0.999 / 0.999 / 0.989 (shokri global /
    # per-class / lira), balanced accuracy 0.99 / 0.99 / 0.95.
    assert result["auc"] > 0.85, result
    assert result["balanced_accuracy"] > 0.75, result
    assert result["num_members"] == result["num_nonmembers"] == N


@pytest.mark.parametrize("name", ORACLE_NAMES)
def test_oracle_is_at_chance_on_two_unseen_sets(setup: Setup, name: str) -> None:
    # "members" and "non-members" both unseen by the target: no signal, AUC ~ 0.5 (sd ~0.024 at n=300).
    oracle = setup.oracles[name]
    x, y = setup.x, setup.y
    value = auc(oracle.scores(setup.target, x[setup.unseen], y[setup.unseen]),
                oracle.scores(setup.target, x[setup.nonmembers], y[setup.nonmembers]))  # fmt: skip
    assert abs(value - 0.5) < 0.08, value  # measured 0.500 / 0.507 / 0.530


def test_scores_and_decisions(setup: Setup) -> None:
    x, y = setup.x[setup.members[:50]], setup.y[setup.members[:50]]
    for oracle in setup.oracles.values():
        scores = oracle.scores(setup.target, x, y)
        assert scores.shape == (50,) and scores.dtype == np.float64
        assert np.all((scores >= 0) & (scores <= 1))
        decisions = oracle.decide(setup.target, x, y)
        assert decisions.dtype == bool and np.array_equal(decisions, scores >= oracle.threshold)
        assert np.array_equal(scores, oracle.scores(setup.target, x, y))  # deterministic


def test_default_shokri_mode_is_the_documented_one(setup: Setup) -> None:
    oracle = fit_oracle(
        "shokri", setup.factory, setup.x[setup.aux], setup.y[setup.aux], shadows=setup.shadows
    )
    assert isinstance(oracle, ShokriOracle) and oracle.mode == DEFAULT_MODE == "global"
    per_class = setup.oracles["shokri-per-class"]
    assert isinstance(per_class, ShokriOracle) and per_class.mode == "per-class"
    # memorise: 600 aux x 4 shadows / 30 classes ~ 80 rows per class: only a few (measured 3) reach
    # 50 in and 50 out rows and get their own attack network
    assert 0 < len(per_class.class_nets) < 30


# ---------------------------------------------------------------------------------- threshold
def test_youden_threshold_hand_made() -> None:
    scores = [0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9]
    labels = [0, 0, 1, 0, 1, 1, 0, 1]
    # member iff score >= t: t = 0.6 gives TPR 3/4, FPR 1/4 (J = 0.5); t = 0.3: TPR 1, FPR 2/4 (J = 0.5);
    # tie -> the strictest (0.6); threshold midway to the next lower score 0.4 -> 0.5
    assert youden_threshold(scores, labels) == pytest.approx(0.5)
    assert youden_threshold([0.2, 0.8], [0, 1]) == pytest.approx(0.5)
    assert youden_threshold([0.5, 0.5, 0.9], [0, 1, 1]) == pytest.approx(0.7)
    with pytest.raises(ValueError, match="both members and non-members"):
        youden_threshold([0.1, 0.2], [1, 1])


@pytest.mark.parametrize("name", ORACLE_NAMES)
def test_threshold_maximises_balanced_accuracy_on_the_shadows(setup: Setup, name: str) -> None:
    oracle = setup.oracles[name]
    scores, labels = oracle.calibration_scores, oracle.calibration_labels
    assert scores is not None and labels is not None and labels.any() and not labels.all()
    assert oracle.threshold == youden_threshold(scores, labels)

    def balanced(t: float) -> float:
        return (np.mean(scores[labels] >= t) + np.mean(scores[~labels] < t)) / 2

    best = max(balanced(t) for t in np.unique(scores))
    assert balanced(oracle.threshold) == pytest.approx(best)
    # one row per (shadow, aux sample); for LiRA (leave-one-shadow-out) every sample keeps at least one
    # other OUT shadow, since with 4 shadows each sample is OUT for exactly 2
    assert len(scores) == 4 * len(setup.aux)


# -------------------------------------------------------------------------------------- state
@pytest.mark.parametrize("name", ORACLE_NAMES)
def test_state_round_trip_gives_identical_scores(setup: Setup, name: str) -> None:
    oracle = setup.oracles[name]
    arrays, config = oracle.to_state()
    for key, value in arrays.items():
        assert isinstance(key, str) and type(value) is np.ndarray and value.dtype.kind in "fiub", key
    for key, value in config.items():
        assert isinstance(key, str) and type(value) in (int, float, str, bool), (key, value)
    check_state(arrays, config)
    json.dumps(config)
    # as the transport would: through an .npz file without pickle, fresh factory models
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    buffer.seek(0)
    with np.load(buffer, allow_pickle=False) as loaded:
        rebuilt = oracle_from_state(dict(loaded), json.loads(json.dumps(config)), setup.factory)
    assert type(rebuilt) is type(oracle) and rebuilt.threshold == oracle.threshold
    x = setup.x[np.concatenate([setup.members[:40], setup.nonmembers[:40]])]
    y = setup.y[np.concatenate([setup.members[:40], setup.nonmembers[:40]])]
    assert np.array_equal(rebuilt.scores(setup.target, x, y), oracle.scores(setup.target, x, y))
    assert np.array_equal(rebuilt.decide(setup.target, x, y), oracle.decide(setup.target, x, y))


def test_lira_state_holds_the_shadow_weights(setup: Setup) -> None:
    arrays, config = setup.oracles["lira"].to_state()
    assert config["num_shadows"] == 4
    names = setup.shadows[0].model.state_dict().keys()
    assert {f"shadow/{s}/{k}" for s in range(4) for k in names} == set(arrays)
    digits = load_dataset("digits")
    with pytest.raises(ValueError, match="does not match|shape"):
        oracle_from_state(arrays, config, lambda: build_model("mlp", digits.info))
    with pytest.raises(ValueError, match="model factory"):
        LiraOracle.from_state(arrays, config, None)  # type: ignore[arg-type]


def test_bad_states_are_rejected(setup: Setup) -> None:
    arrays, config = setup.oracles["shokri-global"].to_state()
    with pytest.raises(TypeError, match="not a numeric numpy array"):
        oracle_from_state({**arrays, "x": [1, 2]}, config, setup.factory)  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="not an int, float, str or bool"):
        oracle_from_state(arrays, {**config, "extra": [1]}, setup.factory)
    with pytest.raises(ValueError, match="unknown oracle 'nope'"):
        oracle_from_state(arrays, {**config, "name": "nope"}, setup.factory)
    with pytest.raises(ValueError, match="format"):
        oracle_from_state(arrays, {**config, "format": 99}, setup.factory)
    with pytest.raises(ValueError, match="lacks global/"):
        oracle_from_state({k: v for k, v in arrays.items() if not k.startswith("global/")}, config, None)


# ------------------------------------------------------------------------------------- errors
def test_scoring_rejects_bad_input(setup: Setup) -> None:
    x, y = setup.x[setup.members[:10]], setup.y[setup.members[:10]]
    digits = load_dataset("digits")
    for oracle in setup.oracles.values():
        with pytest.raises(ValueError, match="empty"):
            oracle.scores(setup.target, x[:0], y[:0])
        with pytest.raises(ValueError, match="10 samples but 9 labels"):
            oracle.scores(setup.target, x, y[:9])
        with pytest.raises(ValueError, match="expects"):
            oracle.scores(setup.target, np.zeros((10, 64), np.float32), y)
        with pytest.raises(ValueError, match="outputs"):  # a 10-class model judged by a 30-class oracle
            oracle.scores(
                build_model("logreg", dataclasses.replace(digits.info, input_shape=x.shape[1:])), x, y % 10
            )
        with pytest.raises(ValueError, match="label 30 outside"):
            oracle.scores(setup.target, x, np.full(10, 30))
        with pytest.raises(ValueError, match="integers"):
            oracle.scores(setup.target, x, y + 0.5)


def test_fit_oracle_rejects_bad_arguments(setup: Setup) -> None:
    x, y = setup.x[setup.aux], setup.y[setup.aux]
    with pytest.raises(ValueError, match=r"unknown oracle kind 'loss'; choose one of: shokri, lira"):
        fit_oracle("loss", setup.factory, x, y)
    assert KINDS == ("shokri", "lira")
    with pytest.raises(ValueError, match="unknown Shokri mode 'per-sample'"):
        fit_oracle("shokri", setup.factory, x, y, mode="per-sample", shadows=setup.shadows)
    with pytest.raises(ValueError, match="only the 'offline' mode"):
        fit_oracle("lira", setup.factory, x, y, mode="online", shadows=setup.shadows)
    with pytest.raises(ValueError, match="LiRA needs num_shadows >= 3"):
        fit_oracle("lira", setup.factory, x, y, num_shadows=2)
    with pytest.raises(ValueError, match="at least 3 shadow models"):
        fit_oracle("lira", setup.factory, x, y, shadows=setup.shadows[:2])
    with pytest.raises(ValueError, match="in_mask has 600 entries but there are 599"):
        fit_oracle("shokri", setup.factory, x[:599], y[:599], shadows=setup.shadows)
    with pytest.raises(ValueError, match="at least 20"):
        fit_oracle("shokri", setup.factory, x[:12], y[:12], epochs=1)


def test_fit_oracle_trains_its_own_shadows() -> None:
    digits = load_dataset("digits")
    factory = lambda: build_model("logreg", digits.info)  # noqa: E731
    x, y = digits.x_train[:200], digits.y_train[:200]
    oracle = fit_oracle("lira", factory, x, y, num_shadows=3, epochs=2, batch_size=64, seed=5)
    again = fit_oracle("lira", factory, x, y, num_shadows=3, epochs=2, batch_size=64, seed=5)
    assert isinstance(oracle, LiraOracle) and len(oracle.shadow_models) == 3
    assert oracle.threshold == again.threshold and math.isfinite(oracle.global_sigma)


# ------------------------------------------------------------------------------ ROC / strength
def test_roc_and_tpr_at_fpr_hand_made() -> None:
    members = [0.9, 0.8, 0.7, 0.3]
    nonmembers = [0.75, 0.2, 0.1, 0.05]
    fpr, tpr, thresholds = roc_curve(members, nonmembers)
    # thresholds: inf, .9, .8, .75, .7, .3, .2, .1, .05
    np.testing.assert_allclose(fpr, [0, 0, 0, 0.25, 0.25, 0.25, 0.5, 0.75, 1])
    np.testing.assert_allclose(tpr, [0, 0.25, 0.5, 0.5, 0.75, 1, 1, 1, 1])
    assert thresholds[0] == np.inf
    assert tpr_at_fpr(fpr, tpr, 0.0) == 0.5  # the best point with no false positive
    assert tpr_at_fpr(fpr, tpr, 0.1) == pytest.approx(0.5)  # between (0, .5) and (.25, .5)
    assert tpr_at_fpr(fpr, tpr, 0.25) == 1.0
    assert tpr_at_fpr(fpr, tpr, 1.0) == 1.0
    # a tie between a member and a non-member is a diagonal step: interpolate along it
    fpr, tpr, _ = roc_curve([0.5, 0.9], [0.5, 0.1])
    assert tpr_at_fpr(fpr, tpr, 0.25) == pytest.approx(0.75)
    assert auc(members, nonmembers) == pytest.approx(np.trapezoid(*roc_curve(members, nonmembers)[1::-1]))


def test_strength_report_fields() -> None:
    result = strength_from_scores(np.linspace(0.5, 1, 50), np.linspace(0, 0.6, 2000), 0.55, name="x")
    assert result["tpr_at_1pct_fpr_resolved"] and result["tpr_at_0.1pct_fpr_resolved"]
    assert result["num_members"] == 50 and result["num_nonmembers"] == 2000 and "roc" not in result
    small = strength_from_scores([0.9, 0.8], [0.1, 0.2, 0.85], 0.5, with_roc=True)
    assert not small["tpr_at_1pct_fpr_resolved"] and not small["tpr_at_0.1pct_fpr_resolved"]
    assert small["balanced_accuracy"] == pytest.approx((1.0 + 2 / 3) / 2)
    assert small["auc"] == pytest.approx(5 / 6) and len(small["roc"]["fpr"]) == 6
