"""The judge (fedforget.judge) and the device's steering oracle (fedforget.mia.device_oracle).

Fast and Flower-free: a seeded synthetic dataset (weak class signal plus 30% label noise, so a small
MLP must memorise) federated over 3 clients with FedAvg on arrays.
"""

from __future__ import annotations

import inspect
import json
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from fedforget.federated import client_seed, fedavg, fedavg_on_arrays
from fedforget.judge import (
    BINS_ID,
    NUM_BINS,
    ClientCalibration,
    Judge,
    JudgePower,
    ScoreHistogram,
    ShadowFederationRecipe,
    bin_scores,
    calibrate,
    client_calibration,
    fit_judge,
    forget_bins,
    judge_aux_half,
    judge_forget_set,
    retrain_verdict,
    train_shadow_federations,
    ulira_check,
)
from fedforget.judge.histogram import INNER_EDGES, hanley_mcneil_se, power_from_histograms
from fedforget.judge.shadow_federation import client_shares
from fedforget.mia import check_state
from fedforget.mia.device_oracle import DeviceOracle, fit_device_oracle
from fedforget.mia.shadow import build_seeded
from fedforget.models.mlp import MLP

D, K = 24, 10
CLIENT_TRAIN, CLIENT_HOLDOUT, NUM_CLIENTS = 150, 60, 3
ROUNDS, LOCAL_EPOCHS = 4, 5


def _factory() -> MLP:
    return MLP(D, K, hidden=(128,))


def _train_federation(clients: list[tuple[np.ndarray, np.ndarray]], seed: int = 1) -> torch.nn.Module:
    model = build_seeded(_factory, seed)
    fedavg_on_arrays(
        model,
        clients,
        rounds=ROUNDS,
        local_epochs=LOCAL_EPOCHS,
        learning_rate=0.05,
        batch_size=16,
        momentum=0.9,
        seed_of=lambda t, k: seed * 1000 + t * 100 + k,
    )
    return model.eval()


@pytest.fixture(scope="module")
def fed():
    """Data, clients' (train, holdout) ids, aux ids, the trained global model and the judge."""
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    n = 1200
    proto = rng.normal(size=(K, D))
    c = rng.integers(0, K, n)
    x = (0.5 * proto[c] + rng.normal(size=(n, D))).astype(np.float32)
    y = np.where(rng.random(n) < 0.3, rng.integers(0, K, n), c).astype(np.int64)
    idx = rng.permutation(n)
    size = CLIENT_TRAIN + CLIENT_HOLDOUT
    clients = [
        (idx[i * size : i * size + CLIENT_TRAIN], idx[i * size + CLIENT_TRAIN : (i + 1) * size])
        for i in range(NUM_CLIENTS)
    ]
    aux = idx[NUM_CLIENTS * size : NUM_CLIENTS * size + 400]
    model = _train_federation([(x[t], y[t]) for t, _ in clients])
    recipe = ShadowFederationRecipe(
        num_federations=4,
        client_sizes=(CLIENT_TRAIN,) * NUM_CLIENTS,
        rounds=ROUNDS,
        local_epochs=LOCAL_EPOCHS,
        learning_rate=0.05,
        batch_size=16,
        seed=3,
    )
    shadows = train_shadow_federations(_factory, x[aux], y[aux], recipe)
    judge = fit_judge(_factory, x[aux], y[aux], recipe, shadows=shadows)
    return {
        "x": x, "y": y, "clients": clients, "aux": aux, "model": model, "judge": judge,
        "shadows": shadows, "recipe": recipe,
    }  # fmt: skip


def _calibrate(fed, model, clients=None):
    x, y = fed["x"], fed["y"]
    clients = clients or fed["clients"]
    return calibrate(
        client_calibration(fed["judge"], model, retained=(x[t], y[t]), heldout=(x[h], y[h]))
        for t, h in clients
    )


# ---------------------------------------------------------------------------------- (a) histograms
def test_bins_are_logit_spaced_and_cover_zero_and_one():
    assert len(INNER_EDGES) == NUM_BINS - 1
    assert bin_scores([0.0, 1.0]).tolist() == [0, NUM_BINS - 1]
    edge = INNER_EDGES[99]
    assert bin_scores([edge, np.nextafter(edge, 0)]).tolist() == [100, 99]  # bin k starts at its edge
    steps = np.diff(np.log(INNER_EDGES / (1 - INNER_EDGES)))
    assert np.allclose(steps, steps[0]) and steps[0] < 0.21
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        bin_scores([0.5, 1.5])


def test_histogram_auc_equals_exact_auc_up_to_same_bin_pairs():
    rng = np.random.default_rng(1)
    pos = 1 / (1 + np.exp(-rng.normal(1.0, 2.0, 700)))
    neg = 1 / (1 + np.exp(-rng.normal(0.0, 2.0, 900)))
    power = power_from_histograms("t", ScoreHistogram.of_scores(pos), ScoreHistogram.of_scores(neg))
    exact = roc_auc_score(np.r_[np.ones(700), np.zeros(900)], np.r_[pos, neg])
    m, n = power.members.counts, power.nonmembers.counts
    same_bin = float(np.sum(m * n)) / (700 * 900)  # pairs the bins cannot order count one half
    assert 0 < abs(power.auc - exact) <= 0.5 * same_bin + 1e-12
    assert abs(power.auc - exact) < 0.005
    # scores placed inside distinct bins: exactly sklearn's
    mids = 1 / (1 + np.exp(-np.linspace(-19.9, 19.9, NUM_BINS - 1) - 0.1))
    pos, neg = mids[rng.choice(len(mids), 50, replace=False)], mids[rng.choice(len(mids), 60, replace=False)]
    power = power_from_histograms("t", ScoreHistogram.of_scores(pos), ScoreHistogram.of_scores(neg))
    assert power.auc == pytest.approx(roc_auc_score(np.r_[np.ones(50), np.zeros(60)], np.r_[pos, neg]))


def test_tpr_at_fpr_threshold_and_balanced_accuracy_on_a_hand_case():
    members = np.zeros(NUM_BINS, dtype=np.int64)
    nonmembers = np.zeros(NUM_BINS, dtype=np.int64)
    members[170], members[60] = 30, 70
    nonmembers[50], nonmembers[160] = 990, 10
    p = power_from_histograms("t", ScoreHistogram(members), ScoreHistogram(nonmembers))
    # ROC: (0, 0) -> (0, .3) -> (.01, .3) -> (.01, 1) -> (1, 1)
    assert p.tpr_at_1pct_fpr == pytest.approx(1.0)
    assert p.tpr_at_01pct_fpr == pytest.approx(0.3)
    assert p.auc == pytest.approx((30 * 1000 + 70 * 990) / 100_000)
    assert p.threshold_bin == 60  # J = 0.99 for bins 51..60: the strictest
    assert p.threshold == pytest.approx(INNER_EDGES[59])
    assert p.balanced_accuracy == pytest.approx((1.0 + 0.99) / 2)
    assert p.is_member([59, 60, 199]).tolist() == [False, True, True]
    doc = json.loads(json.dumps(p.to_dict()))  # what a server keeps between rounds
    assert JudgePower.from_dict(doc).summary() == p.summary()
    with pytest.raises(ValueError, match="bins"):
        JudgePower.from_dict({**doc, "bins": "linear-10"})


def test_measurable_rule_is_the_hanley_mcneil_lower_bound():
    a, m, n = 0.6, 40, 50
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    expected = math.sqrt((a * (1 - a) + (m - 1) * (q1 - a * a) + (n - 1) * (q2 - a * a)) / (m * n))
    assert hanley_mcneil_se(a, m, n) == pytest.approx(expected)
    same = ScoreHistogram.of_bins(np.arange(100, 150))
    at_chance = power_from_histograms("t", same, same)
    assert at_chance.auc == pytest.approx(0.5) and not at_chance.measurable
    assert "chance" in at_chance.reason
    apart = power_from_histograms(
        "t", ScoreHistogram.of_bins(np.full(30, 150)), ScoreHistogram.of_bins(np.full(30, 50))
    )
    assert apart.auc == 1.0 and apart.measurable
    few = power_from_histograms(
        "t", ScoreHistogram.of_bins(np.full(3, 150)), ScoreHistogram.of_bins(np.full(30, 50))
    )
    assert not few.measurable and "too few" in few.reason
    empty = power_from_histograms("t", ScoreHistogram.empty(), same)
    assert not empty.measurable and math.isnan(empty.auc)


def test_each_model_is_judged_against_its_own_threshold():
    def power(member_bin: int, nonmember_bin: int):
        return power_from_histograms(
            "loss",
            ScoreHistogram.of_bins(np.full(50, member_bin)),
            ScoreHistogram.of_bins(np.full(50, nonmember_bin)),
        )

    before, after = power(120, 80), power(160, 130)  # the model after is more confident overall
    assert (before.threshold_bin, after.threshold_bin) == (120, 160)
    forget_before, forget_after = np.full(10, 125), np.full(10, 130)  # after: like held-out data
    judged = judge_forget_set(
        before={"loss": before}, after={"loss": after},
        before_bins={"loss": forget_before}, after_bins={"loss": forget_after},
    )["loss"]  # fmt: skip
    assert (judged.counts.b_t, judged.counts.a_f) == (10, 10) and judged.fr == 1.0
    assert judged.auc_before == 1.0 and judged.auc_after == 0.5  # vs each model's own held-out histogram


# ---------------------------------------------------------------------- (b) calibration on the target
def test_loss_judge_calibrated_from_client_histograms_sees_memorisation(fed):
    x, y, model, judge = fed["x"], fed["y"], fed["model"], fed["judge"]
    power = _calibrate(fed, model)
    loss = power["loss"]
    assert loss.measurable and loss.auc >= 0.65
    assert (
        loss.num_members == NUM_CLIENTS * CLIENT_TRAIN and loss.num_nonmembers == NUM_CLIENTS * CLIENT_HOLDOUT
    )
    forget = fed["clients"][0][0][:20]  # training samples of client 0
    bins = forget_bins(judge, model, forget=(x[forget], y[forget]))
    assert loss.is_member(bins["loss"]).sum() >= 10
    # an untrained model has no members: every attack is at chance, so FR is not measurable
    untrained = build_seeded(_factory, 5).eval()
    power0 = _calibrate(fed, untrained)
    assert all(not p.measurable for p in power0.values())
    judged = judge_forget_set(
        before=power0, after=power0, before_bins=forget_bins(judge, untrained, forget=(x[forget], y[forget])),
        after_bins=forget_bins(judge, untrained, forget=(x[forget], y[forget])),
    )  # fmt: skip
    assert all(j.status == "not-measurable" and math.isnan(j.fr) for j in judged.values())
    assert "before unlearning: at chance" in judged["loss"].reason


def test_fr_under_each_attack_against_a_retrained_federation(fed):
    x, y, judge, clients = fed["x"], fed["y"], fed["judge"], fed["clients"]
    forget = clients[0][0][:20]
    kept = np.setdiff1d(clients[0][0], forget)
    retrained = _train_federation([(x[kept], y[kept])] + [(x[t], y[t]) for t, _ in clients[1:]])
    before = _calibrate(fed, fed["model"])
    after = _calibrate(fed, retrained, [(kept, clients[0][1]), *clients[1:]])
    pair = (x[forget], y[forget])
    judged = judge_forget_set(
        before=before, after=after, before_bins=forget_bins(judge, fed["model"], forget=pair),
        after_bins=forget_bins(judge, retrained, forget=pair),
    )  # fmt: skip
    assert set(judged) == {"loss", "shokri", "lira"}
    for j in judged.values():
        assert j.status == "measured", j.reason
        assert j.fr > 0.3 and j.auc_after < j.auc_before - 0.15
        doc = j.to_dict()
        assert doc["attack"] == j.attack and doc["b-t"] + doc["b-f"] == 20
        json.dumps(doc)
    # nothing changed: FR 0
    same = judge_forget_set(
        before=before, after=before, before_bins=forget_bins(judge, fed["model"], forget=pair),
        after_bins=forget_bins(judge, fed["model"], forget=pair),
    )  # fmt: skip
    assert all(j.fr == 0.0 for j in same.values())
    verdicts = retrain_verdict(unlearned=same, retrained=judged)
    assert {v["verdict"] for v in verdicts.values()} == {"under-forgetting"}


def test_calibration_travels_as_counts_and_bad_replies_are_one_line_errors(fed):
    x, y = fed["x"], fed["y"]
    t, h = fed["clients"][0]
    cal = client_calibration(
        fed["judge"], fed["model"], retained=(x[t], y[t]), heldout=(x[h], y[h]), max_samples=100
    )
    arrays = cal.to_arrays()
    assert all(a.dtype == np.int64 and a.shape == (NUM_BINS,) for a in arrays.values())
    assert int(arrays["members/loss"].sum()) == 100 and int(arrays["nonmembers/loss"].sum()) == CLIENT_HOLDOUT
    back = ClientCalibration.from_arrays(arrays)
    assert np.array_equal(back.members["lira"].counts, cal.members["lira"].counts)
    with pytest.raises(ValueError, match="counts"):
        ClientCalibration.from_arrays({"members/loss": np.ones(3), "nonmembers/loss": np.ones(3)})
    with pytest.raises(ValueError, match="unexpected"):
        ClientCalibration.from_arrays({"scores/loss": np.ones(NUM_BINS)})
    only_loss = ClientCalibration({"loss": cal.members["loss"]}, {"loss": cal.nonmembers["loss"]})
    with pytest.raises(ValueError, match="different attacks"):
        calibrate([cal, only_loss])


# ------------------------------------------------------------------------- (c) shadow federations
def test_shadow_federations_in_out_bookkeeping(fed):
    x, y, aux, shadows = fed["x"], fed["y"], fed["aux"], fed["shadows"]
    assert len(shadows) == 4
    masks = np.stack([s.in_mask for s in shadows])
    assert np.all(masks.sum(axis=0) == 2)  # every aux sample IN for exactly K // 2 federations
    for s in shadows:
        assert np.array_equal(s.in_mask, s.client_index >= 0)
        counts = np.bincount(s.client_index[s.in_mask], minlength=NUM_CLIENTS)
        assert counts.max() - counts.min() <= 1  # equal client sizes -> equal shares
        # the federation trained on its IN samples: lower loss there than on its OUT samples
        logits = s.model(torch.from_numpy(x[aux])).detach()
        loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(y[aux]), reduction="none").numpy()
        assert loss[s.in_mask].mean() < loss[~s.in_mask].mean() - 0.3
    again = train_shadow_federations(_factory, x[aux], y[aux], fed["recipe"])
    assert np.array_equal(again[0].client_index, shadows[0].client_index)
    assert torch.equal(
        again[0].model.state_dict()["net.1.weight"], shadows[0].model.state_dict()["net.1.weight"]
    )
    scores = fed["judge"].scores(fed["model"], x[:7], y[:7])
    assert set(scores) == {"loss", "shokri", "lira"} and fed["judge"].names[0] == "loss"
    assert all(s.shape == (7,) and s.min() >= 0 and s.max() <= 1 for s in scores.values())


def test_max_in_samples_bounds_each_federation():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(100, D)).astype(np.float32), rng.integers(0, K, 100)
    recipe = ShadowFederationRecipe(
        num_federations=3, client_sizes=(2, 1), rounds=1, local_epochs=1, max_in_samples=30, seed=9
    )
    for s in train_shadow_federations(_factory, x, y, recipe):
        assert s.in_mask.sum() == 30 and np.array_equal(s.in_mask, s.client_index >= 0)
        assert np.bincount(s.client_index[s.in_mask]).tolist() == [20, 10]


def test_client_shares_follow_the_runs_proportions_and_aux_halves_are_disjoint():
    assert client_shares(100, (200, 100, 100)).tolist() == [50, 25, 25]
    assert client_shares(7, (1, 1, 1)).sum() == 7
    judge_half, other = judge_aux_half(np.arange(11, 32), seed=0)
    assert len(judge_half) == 11 and len(other) == 10
    assert set(judge_half).isdisjoint(other) and set(judge_half) | set(other) == set(range(11, 32))


def test_the_samples_lent_to_steer_by_come_from_the_half_the_judge_never_sees():
    from fedforget.steer import steer_reference, with_lent_reference

    x = np.arange(200, dtype=np.float32).reshape(100, 2)
    y = np.arange(100) % 3
    aux = np.arange(20, 80)
    judge_half, other = judge_aux_half(aux, seed=4)
    lent_x, lent_y = steer_reference(x, y, aux, run_seed=4, limit=12)
    ids = (lent_x[:, 0] / 2).astype(int)
    assert len(ids) == 12 and set(ids) <= set(other) and set(ids).isdisjoint(judge_half)
    assert np.array_equal(lent_y, y[ids]) and np.array_equal(ids, np.sort(ids))
    again = steer_reference(x, y, aux, run_seed=4, limit=12)[0]
    assert np.array_equal(again, lent_x)  # seeded: every round of the run lends the same samples
    assert len(steer_reference(x, y, aux, run_seed=4, limit=1000)[1]) == len(other)
    assert len(steer_reference(x, y, aux, run_seed=4, limit=0)[1]) == 0
    held = (x[:3], y[:3])
    both = with_lent_reference(held, (lent_x, lent_y))
    assert len(both[1]) == 15 and np.array_equal(both[0][:3], x[:3])
    assert with_lent_reference(held, None) is held


def test_fedavg_on_arrays_is_the_runs_fedavg():
    from fedforget.client_data import ClientData
    from fedforget.config import RunConfig
    from fedforget.data import load
    from fedforget.models import build_model, resolve_model_name

    config = RunConfig(dataset="digits", num_clients=3, num_rounds=2, local_epochs=1, max_train_samples=300)
    reference = fedavg(config, evaluate=False)
    info = load(config).info
    model = build_model(resolve_model_name(config.model, info), info, seed=config.seed)
    clients = [ClientData.for_partition(config, k) for k in range(3)]
    fedavg_on_arrays(
        model, [(c.x_train, c.y_train) for c in clients], rounds=2, local_epochs=1,
        learning_rate=config.learning_rate, batch_size=config.batch_size, momentum=config.momentum,
        weight_decay=config.weight_decay, seed_of=lambda t, k: client_seed(config, t, k),
    )  # fmt: skip
    for key, value in reference.state_dict.items():
        assert torch.equal(model.state_dict()[key], value), key


# ------------------------------------------------------------------------------------ (d) verdicts
@pytest.mark.parametrize(
    ("unlearned", "retrained", "verdict"),
    [
        ({"fr": 0.6, "auc": 0.50}, {"fr": 0.62, "auc": 0.52}, "retrain-equivalent"),
        ({"fr": 0.9, "auc": 0.40}, {"fr": 0.6, "auc": 0.50}, "over-forgetting"),  # AUC < retrained - 0.05
        ({"fr": 0.2, "auc": 0.70}, {"fr": 0.6, "auc": 0.50}, "under-forgetting"),
        ({"fr": 0.8, "auc": 0.50}, {"fr": 0.6, "auc": 0.50}, "over-forgetting"),  # AUCs agree, FR > + 0.1
        ({"fr": 0.4, "auc": 0.51}, {"fr": 0.6, "auc": 0.50}, "under-forgetting"),
        ({"fr": None, "auc": 0.51}, {"fr": 0.6, "auc": 0.50}, "retrain-equivalent"),  # FR not compared
        ({"fr": 0.6, "auc": 0.5, "status": "not-measurable"}, {"fr": 0.6, "auc": 0.5}, "not-measurable"),
        ({"fr": 0.6, "auc": None}, {"fr": 0.6, "auc": 0.5}, "not-measurable"),
    ],
)
def test_retrain_verdict_rules(unlearned, retrained, verdict):
    out = retrain_verdict(unlearned={"loss": unlearned}, retrained={"loss": retrained})["loss"]
    assert out["verdict"] == verdict, out["reason"]
    if unlearned["auc"] is not None:
        assert out["auc-diff"] == pytest.approx(unlearned["auc"] - retrained["auc"])


def test_over_forgetting_boundary_and_missing_attack():
    just = retrain_verdict(
        unlearned={"a": {"auc": 0.451, "fr": 0.5}}, retrained={"a": {"auc": 0.5, "fr": 0.5}}
    )
    below = retrain_verdict(
        unlearned={"a": {"auc": 0.449, "fr": 0.5}}, retrained={"a": {"auc": 0.5, "fr": 0.5}}
    )
    assert just["a"]["verdict"] == "retrain-equivalent" and below["a"]["verdict"] == "over-forgetting"
    out = retrain_verdict(unlearned={"a": {"auc": 0.5, "fr": 0.5}}, retrained={"b": {"auc": 0.5, "fr": 0.5}})
    assert out["a"]["verdict"] == out["b"]["verdict"] == "not-measurable"


# ------------------------------------------------------------------------------------ (e) U-LiRA
def test_ulira_check_identical_is_chance_and_separated_is_high():
    rng = np.random.default_rng(2)

    def scores(shift: float, models: int) -> np.ndarray:
        return 1 / (1 + np.exp(-(rng.normal(0, 1, (models, 200)) + shift)))

    same = ulira_check(scores(0.0, 20), scores(0.0, 20))
    assert abs(same.accuracy - 0.5) < 0.05 and abs(same.auc - 0.5) < 0.03
    apart = ulira_check(scores(3.0, 20), scores(0.0, 20))
    assert apart.accuracy > 0.9 and apart.auc > 0.95
    over = ulira_check(scores(-3.0, 8), scores(0.0, 8))
    assert over.auc < 0.05 and over.accuracy > 0.85  # told apart, and AUC says which way
    assert len(apart.per_sample_accuracy) == 200
    with pytest.raises(ValueError, match="at least 2"):
        ulira_check(scores(0.0, 1), scores(0.0, 5))


# ------------------------------------------------------------------------------ (f) state round trip
def test_judge_state_round_trips_as_numbers_only(fed):
    judge = fed["judge"]
    arrays, config = judge.to_state()
    check_state(arrays, config)
    assert all(a.dtype.kind in "fiub" for a in arrays.values())
    json.dumps(config)
    assert config["judge/headline"] == "loss" and config["judge/bins"] == BINS_ID
    rebuilt = Judge.from_state({k: v.copy() for k, v in arrays.items()}, dict(config), _factory)
    x, y = fed["x"][:50], fed["y"][:50]
    for name, s in judge.scores(fed["model"], x, y).items():
        assert np.array_equal(rebuilt.scores(fed["model"], x, y)[name], s), name
    with pytest.raises(ValueError, match="bins"):
        Judge.from_state(arrays, {**config, "judge/bins": "linear-10"}, _factory)
    with pytest.raises(ValueError, match="unknown attack"):
        Judge.from_state(arrays, {**config, "judge/attacks": "loss,gradient"}, _factory)
    loss_only = fit_judge(_factory, fed["x"][:40], fed["y"][:40], attacks=("loss",))
    assert loss_only.to_state()[0] == {}


# ------------------------------------------------------------------------- (g) device steering oracle
def test_device_oracle_is_another_family_fitted_on_device_data_only(fed):
    from fedforget.forsaken.oracle import LossThresholdOracle, check_oracle
    from fedforget.forsaken.surrogate import margin_function

    x, y, model = fed["x"], fed["y"], fed["model"]
    (t0, h0), (t1, h1) = fed["clients"][0], fed["clients"][1]
    oracle = fit_device_oracle(model, members=(x[t0], y[t0]), nonmembers=(x[h0], y[h0]), seed=4)
    check_oracle(oracle)
    assert margin_function(oracle, model) is not None  # Forsaken's hinge can steer by it
    assert isinstance(oracle, DeviceOracle) and not isinstance(oracle, LossThresholdOracle)
    assert oracle.family != "threshold" and oracle.name not in fed["judge"].attacks
    # its only inputs are the model, the device's own members / non-members and a seed
    assert list(inspect.signature(fit_device_oracle).parameters) == [
        "model", "members", "nonmembers", "seed", "max_samples",
    ]  # fmt: skip
    own_scores = np.r_[oracle.scores(model, x[t0], y[t0]), oracle.scores(model, x[h0], y[h0])]
    own = roc_auc_score(np.r_[np.ones(len(t0)), np.zeros(len(h0))], own_scores)
    assert own > 0.7
    # seeded and independent of the global RNGs; another device's data gives another oracle
    torch.manual_seed(123)
    np.random.seed(123)
    again = fit_device_oracle(model, members=(x[t0], y[t0]), nonmembers=(x[h0], y[h0]), seed=4)
    assert all(np.array_equal(a, again.to_state()[0][k]) for k, a in oracle.to_state()[0].items())
    other = fit_device_oracle(model, members=(x[t1], y[t1]), nonmembers=(x[h1], y[h1]), seed=4)
    assert not np.array_equal(other.to_state()[0]["mean"], oracle.to_state()[0]["mean"])
    with pytest.raises(TypeError, match="fit_device_oracle"):
        DeviceOracle.fit([], x, y)
    with pytest.raises(ValueError, match="non-members"):
        fit_device_oracle(model, members=(x[t0], y[t0]), nonmembers=(x[h0][:2], y[h0][:2]))


def test_a_device_that_withdrew_everything_steers_with_its_forget_set_as_members(fed):
    from fedforget.steer import fit_steering_oracle

    x, y, model = fed["x"], fed["y"], fed["model"]
    t0, h0 = fed["clients"][0]
    nothing = (x[:0], y[:0])
    # all of client 0's training data withdrawn: on the model before unlearning they are members, and
    # the steer fitted on them against the held-out samples sees them (before the fix it fitted half
    # of the held-out samples as stand-in members: an oracle at chance)
    steer = fit_steering_oracle(
        model, retained=nothing, heldout=(x[h0], y[h0]), seed=4, forget=(x[t0], y[t0])
    )
    scores = np.r_[steer.scores(model, x[t0], y[t0]), steer.scores(model, x[h0], y[h0])]
    assert roc_auc_score(np.r_[np.ones(len(t0)), np.zeros(len(h0))], scores) > 0.7
    same = fit_device_oracle(model, members=(x[t0], y[t0]), nonmembers=(x[h0], y[h0]), seed=4)
    assert np.array_equal(steer.scores(model, x[h0], y[h0]), same.scores(model, x[h0], y[h0]))
    # with retained samples the forget set is not used; with neither, half the held-out stands in
    kept = fit_steering_oracle(model, retained=(x[t0], y[t0]), heldout=(x[h0], y[h0]), seed=4, forget=nothing)
    assert np.array_equal(kept.scores(model, x[h0], y[h0]), same.scores(model, x[h0], y[h0]))
    blind = fit_steering_oracle(model, retained=nothing, heldout=(x[h0], y[h0]), seed=4)
    assert not np.array_equal(blind.scores(model, x[h0], y[h0]), same.scores(model, x[h0], y[h0]))


def test_a_device_without_retained_samples_calibrates_with_an_empty_member_side() -> None:
    """A device that withdrew all its data still answers the judge query (it failed every round before)."""
    from fedforget.judge import Judge, LossAttack, calibrate, client_calibration

    rng = np.random.default_rng(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3))
    judge = Judge({"loss": LossAttack()})

    def pair(n: int) -> tuple[np.ndarray, np.ndarray]:
        return rng.normal(size=(n, 4)).astype(np.float32), rng.integers(0, 3, n)

    empty = client_calibration(judge, model, retained=pair(0), heldout=pair(20))
    assert empty.members["loss"].counts.sum() == 0 and empty.nonmembers["loss"].counts.sum() == 20
    other = client_calibration(judge, model, retained=pair(30), heldout=pair(20))
    merged = calibrate([empty, other])["loss"]
    assert merged.summary()["num-members"] == 30 and merged.summary()["num-nonmembers"] == 40
