"""Tests for the unlearning baselines (fedforget.baselines): each runs, keeps its invariants, and bad
input is refused. Tiny data (digits, 3 clients, 2 rounds of 1 epoch; logreg for the centralized ones)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from fedforget import baselines, data, models, training
from fedforget.baselines import base
from fedforget.baselines.ascent import param_distance
from fedforget.baselines.gradient_ascent import constant_model_loss
from fedforget.client_data import ClientData
from fedforget.config import RunConfig
from fedforget.federated import fedavg, state_nbytes, weighted_average


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


CONFIG = RunConfig(dataset="digits", model="mlp", num_clients=3, num_rounds=2, local_epochs=1, seed=3)


@pytest.fixture(scope="module")
def trained() -> tuple[object, baselines.Original]:
    return baselines.train_original(CONFIG)


@pytest.fixture(scope="module")
def forget() -> dict[int, np.ndarray]:
    return {0: ClientData.for_partition(CONFIG, 0).train_ids[::9]}


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _rows(x: np.ndarray) -> set[bytes]:
    return {row.tobytes() for row in np.asarray(x, dtype=np.float32)}


def _forbidden_rows(forget: dict[int, np.ndarray]) -> set[bytes]:
    """Rows of the forget set that no kept sample shares (so seeing one means seeing a forget sample)."""
    kept, gone = set(), set()
    for pid in range(CONFIG.num_clients):
        client = ClientData.for_partition(CONFIG, pid)
        out = np.isin(client.train_ids, forget.get(pid, []))
        kept |= _rows(client.x_train[~out])
        gone |= _rows(client.x_train[out])
    return gone - kept


class _Spy:
    """Wraps fedforget.training.train and keeps the rows of every call."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[set[bytes]] = []
        self.real = training.train
        monkeypatch.setattr(training, "train", self)

    def __call__(self, model: torch.nn.Module, x: np.ndarray, y: np.ndarray, **kwargs: object) -> object:
        self.calls.append(_rows(x))
        return self.real(model, x, y, **kwargs)


# ------------------------------------------------------------------------------------------ training
def test_recording_changes_nothing_and_stores_what_it_says(trained: tuple) -> None:
    result, original = trained
    plain = fedavg(CONFIG)
    assert _equal(result.state_dict, plain.state_dict)  # the hook only reads
    assert result.client_seconds > 0
    store = original.federaser
    assert store.rounds == [1, 2] and original.last_round.server_round == 2
    # U_t^k = w_{t+1}^k - w_t, and averaging the w_{t+1}^k of round 2 gives the final model
    last = original.last_round
    pids = sorted(last.client_states)
    averaged = weighted_average([last.client_states[p] for p in pids], [last.weights[p] for p in pids])
    for key, value in result.state_dict.items():
        np.testing.assert_allclose(averaged[key], value.numpy(), atol=1e-7)
        np.testing.assert_allclose(
            store.updates[2][1][key], last.client_states[1][key] - store.global_states[2][key], atol=0
        )
    expected = sum(a.nbytes for s in store.global_states.values() for a in s.values())
    expected += sum(a.nbytes for per in store.updates.values() for u in per.values() for a in u.values())
    assert store.storage_bytes == expected == 2 * 4 * state_nbytes(result.state_dict)
    sparse = baselines.FedEraserStore(every=2)
    fedavg(CONFIG, on_round=sparse, evaluate=False)
    assert sparse.rounds == [1] and sparse.storage_bytes == store.storage_bytes // 2


# ------------------------------------------------------------------------------------- federated
def test_retrain_is_fedavg_without_the_ids(trained: tuple, forget: dict) -> None:
    _, original = trained
    out = baselines.retrain(original, forget)
    assert _equal(out.state_dict, fedavg(CONFIG, exclude=forget, evaluate=False).state_dict)
    assert not _equal(out.state_dict, original.state_dict)
    size = state_nbytes(out.state_dict)
    assert out.bytes_sent == 2 * size * 3 * 2 and out.storage_bytes == 0 and out.seconds > 0


def test_finetune_never_sees_the_forget_ids(
    trained: tuple, forget: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, original = trained
    forbidden = _forbidden_rows(forget)
    assert forbidden
    spy = _Spy(monkeypatch)
    out = baselines.finetune(original, forget, rounds=2)
    assert len(spy.calls) == 2 * CONFIG.num_clients
    assert not any(rows & forbidden for rows in spy.calls)
    # rounds 3 and 4 of the run, continued from the trained model
    expected = fedavg(CONFIG, exclude=forget, initial_state=original.state_dict, rounds=2, start_round=3)
    assert _equal(out.state_dict, expected.state_dict)
    assert [row["round"] for row in out.history] == [3, 4]


def test_gradient_ascent_raises_the_forget_loss_within_its_bounds(trained: tuple, forget: dict) -> None:
    _, original = trained
    model = base.build_model(CONFIG, original.state_dict)
    _, x_f, y_f = ClientData.for_partition(CONFIG, 0).subset(forget[0])
    loss_before = training.evaluate(model, x_f, y_f).loss
    ceiling = constant_model_loss(model, x_f, y_f)
    assert ceiling == pytest.approx(math.log(10))
    free = baselines.ascent_delta(
        model, (x_f, y_f), baselines.AscentConfig(learning_rate=0.05, max_steps=500)
    )
    assert free.stopped_because == "loss-ceiling"
    losses = [row["forget-loss"] for row in free.history]
    assert losses[0] == pytest.approx(loss_before) and losses[-1] >= ceiling > max(losses[:-1])
    after = base.build_model(CONFIG, baselines.add_delta(original.state_dict, free.delta))
    assert training.evaluate(after, x_f, y_f).loss == pytest.approx(losses[-1], rel=1e-5)
    assert _equal(dict(model.state_dict()), original.state_dict)  # the input model is untouched
    # a step budget and a norm bound
    short = baselines.ascent_delta(
        model, (x_f, y_f), baselines.AscentConfig(learning_rate=0.05, max_steps=3, max_norm=0.05)
    )
    assert short.stopped_because == "max-steps" and len(short.history) == 4
    norm = math.sqrt(sum(float((d**2).sum()) for d in short.delta.values()))
    assert 0 < norm <= 0.05 + 1e-6
    assert short.history[-1]["forget-loss"] > loss_before
    out = baselines.gradient_ascent(original, forget, repair_rounds=1)
    assert out.delta is not None and out.storage_bytes == 0 and out.history[-1]["round"] == 3


def test_pga_stays_in_the_ball_around_the_other_clients_average(trained: tuple, forget: dict) -> None:
    _, original = trained
    last = original.last_round
    ref = baselines.reference_state(
        original.state_dict,
        {k: torch.from_numpy(v) for k, v in last.client_states[0].items()},
        last.weights[0],
        sum(last.weights.values()),
    )
    others = weighted_average([last.client_states[p] for p in (1, 2)], [last.weights[p] for p in (1, 2)])
    for key in ref:
        np.testing.assert_allclose(ref[key].numpy(), others[key], atol=2e-6)
    for radius in (0.3, 2.0):
        config = baselines.PGAConfig(learning_rate=0.5, max_steps=40, radius=radius, stop_accuracy=0.0)
        out = baselines.pga(original, forget, config=config, repair_rounds=0)
        steps = [row for row in out.history if row.get("step")]
        assert steps and all(row["distance"] <= radius * (1 + 1e-5) for row in steps)
        unlearned = base.build_model(CONFIG, out.state_dict)
        assert param_distance(unlearned, ref) <= radius * (1 + 1e-5)
        assert out.extra["radius"] == radius
    assert max(row["distance"] for row in steps) > 0.3  # the larger ball is used: the bound is what binds
    # the paper's defaults: radius from random models, early stop on the forget accuracy
    out = baselines.pga(original, forget, repair_rounds=1)
    assert out.extra["stopped-because"] in {"accuracy-floor", "max-steps"}
    assert out.extra["radius"] > 0 and out.extra["final-distance"] <= out.extra["radius"] * (1 + 1e-5)


def test_federaser_storage_and_calibration_with_remaining_clients_only(
    trained: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, original = trained
    everything = {0: ClientData.for_partition(CONFIG, 0).train_ids}  # client-level withdrawal
    forbidden = _forbidden_rows(everything)
    spy = _Spy(monkeypatch)
    out = baselines.federaser(original, everything)
    assert out.storage_bytes == original.federaser.storage_bytes
    assert len(spy.calls) == 2 * 2  # 2 stored rounds x the 2 remaining clients
    assert not any(rows & forbidden for rows in spy.calls)
    assert out.extra["remaining-clients"] == 2 and out.extra["calibration-rounds"] == 2
    assert not _equal(out.state_dict, original.state_dict)
    # calibration keeps the stored magnitude and the new direction, per tensor
    rng = np.random.default_rng(0)
    stored, new = {"w": rng.normal(size=(3, 2))}, {"w": rng.normal(size=(3, 2))}
    calibrated = baselines.calibrate_update(stored, new)["w"]
    assert np.linalg.norm(calibrated) == pytest.approx(np.linalg.norm(stored["w"]))
    np.testing.assert_allclose(calibrated / np.linalg.norm(calibrated), new["w"] / np.linalg.norm(new["w"]))
    # the server step: w~ + sum_k (n_k / n) * ||U_k|| * (w^_k - w~) / ||w^_k - w~||, by hand
    store = baselines.FedEraserStore()
    store.updates[1] = {0: {"w": np.full(2, 3.0)}, 1: {"w": np.array([0.0, 4.0])}}
    current = {"w": np.array([1.0, 1.0]), "count": np.array(7)}
    replies = {0: {"w": np.array([2.0, 1.0]), "count": np.array(9)}, 1: {"w": np.array([1.0, 0.0])}}
    step = baselines.calibration_step(store, 1, current, replies, {0: 1.0, 1: 3.0})
    np.testing.assert_allclose(step["w"], [1 + 0.25 * math.sqrt(18), 1 - 0.75 * 4])
    assert step["count"] == 7  # integer entries are not calibrated
    with pytest.raises(ValueError, match="not in the store"):
        baselines.calibration_step(store, 2, current, replies, {0: 1.0, 1: 3.0})


# ------------------------------------------------------------------------------------- centralized
def _central() -> tuple[np.ndarray, np.ndarray, np.ndarray, object]:
    dataset = data.load(CONFIG)
    ids = np.arange(600)
    info = dataset.info

    def factory(seed: int) -> torch.nn.Module:
        return models.build_model("logreg", info, seed=seed)

    return dataset.x_train[ids], dataset.y_train[ids], ids, factory


def test_sisa_retrains_only_the_affected_shard_from_its_clean_checkpoint() -> None:
    x, y, ids, factory = _central()
    config = baselines.SisaConfig(shards=3, slices=3, epochs_per_slice=2, seed=1)
    sisa = baselines.sisa_train(factory, x, y, ids, config)
    assert sisa.storage_bytes == 3 * 4 * state_nbytes(sisa.checkpoints[0][0])
    ensemble = sisa.ensemble
    dataset = data.load(CONFIG)
    assert training.evaluate(ensemble, dataset.x_test, dataset.y_test).accuracy > 0.8
    target = int(ids[(sisa.shard == 1) & (sisa.slice == 1)][0])  # shard 1, second slice
    out = baselines.sisa_unlearn(sisa, np.array([target]))
    new = out.extra["sisa"]
    assert out.extra["shards-retrained"] == 1 and out.extra["slices-retrained"] == 2
    for s in (0, 2):
        assert all(_equal(a, b) for a, b in zip(sisa.checkpoints[s], new.checkpoints[s], strict=True))
    assert _equal(new.checkpoints[1][1], sisa.checkpoints[1][1])  # before the sample's slice
    assert not _equal(new.checkpoints[1][3], sisa.checkpoints[1][3])
    # = training shard 1 from its clean checkpoint without the sample, by hand
    member = factory(0)
    member.load_state_dict(sisa.checkpoints[1][1])
    for r in (2, 3):
        keep = (sisa.shard == 1) & (sisa.slice < r) & (ids != target)
        training.train(
            member,
            x[keep],
            y[keep],
            epochs=2,
            learning_rate=config.learning_rate,
            batch_size=config.batch_size,
            momentum=config.momentum,
            seed=config.seed * 1_000_003 + 1 * 1_009 + r,
        )
    assert _equal(dict(member.state_dict()), new.checkpoints[1][3])
    assert _equal(
        {f"members.1.{k}": v for k, v in member.state_dict().items()},
        {k: v for k, v in out.state_dict.items() if k.startswith("members.1.")},
    )
    with pytest.raises(ValueError, match="already unlearned"):
        baselines.sisa_unlearn(new, np.array([target]))
    with pytest.raises(ValueError, match="not in this SISA"):
        baselines.sisa_unlearn(sisa, np.array([10_000]))


def test_amnesiac_subtracts_exactly_the_recorded_updates() -> None:
    x, y, ids, factory = _central()
    model = factory(0)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    record = baselines.amnesiac_train(model, x, y, ids, epochs=2, batch_size=32, seed=5)
    plain = factory(0)
    training.train(plain, x, y, epochs=2, batch_size=32, learning_rate=0.05, momentum=0.9, seed=5)
    assert _equal(dict(model.state_dict()), dict(plain.state_dict()))  # recording changes nothing
    assert len(record.updates) == 2 * math.ceil(600 / 32)
    assert record.storage_bytes == sum(state_nbytes(u) for u in record.updates) + 2 * 600 * 8
    forget_ids = ids[[3, 77, 400]]
    out = baselines.amnesiac_unlearn(model, record, forget_ids, repair=None)
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    hit = [i for i, b in enumerate(record.batch_ids) if set(b.tolist()) & set(forget_ids.tolist())]
    assert len(hit) == out.extra["batches-subtracted"] == 6  # each id is in one batch per epoch
    for i in hit:
        for key in expected:
            expected[key] = expected[key] - record.updates[i][key]
    assert _equal(out.state_dict, expected)
    everything, _ = baselines.subtract_updates(dict(model.state_dict()), record, ids)
    for key in initial:  # subtracting every update goes back to the start
        torch.testing.assert_close(everything[key], initial[key], atol=1e-5, rtol=0)
    keep = ~np.isin(ids, forget_ids)
    repaired = baselines.amnesiac_unlearn(
        model, record, forget_ids, repair=(x[keep], y[keep]), repair_epochs=1
    )
    assert not _equal(repaired.state_dict, out.state_dict) and repaired.extra["repair-epochs"] == 1
    tracked = baselines.amnesiac_train(factory(0), x, y, ids, epochs=1, track=ids[:5])
    assert 1 <= len(tracked.updates) <= 5
    with pytest.raises(ValueError, match="not tracked"):
        baselines.subtract_updates(dict(model.state_dict()), tracked, ids[10:12])


# ------------------------------------------------------------------------------------- registry, input
def test_registry_names_every_method() -> None:
    assert set(baselines.METHODS) == {
        "retrain",
        "finetune",
        "gradient-ascent",
        "pga",
        "federaser",
        "sisa",
        "amnesiac",
    }
    assert baselines.get("gradient_ascent").name == "gradient-ascent"
    assert {m.kind for m in baselines.METHODS.values()} == set(baselines.KINDS)
    assert [m.name for m in baselines.METHODS.values() if m.client_side] == ["gradient-ascent", "pga"]
    with pytest.raises(ValueError, match="Did you mean 'federaser'"):
        baselines.get("feederaser")


def test_bad_input_is_refused_with_a_clear_message(trained: tuple, forget: dict) -> None:
    _, original = trained
    held = ClientData.for_partition(CONFIG, 1).train_ids
    cases = [
        (lambda: baselines.retrain(original, {7: np.array([1])}), "outside"),
        (lambda: baselines.retrain(original, {0: held[:2]}), "does not hold"),
        (lambda: baselines.retrain(original, {}), "empty"),
        (lambda: baselines.retrain(original, {0: np.array([], dtype=int)}), "empty"),
        (lambda: baselines.retrain(original, {1: np.array([held[0], held[0]])}), "repeats"),
        (lambda: baselines.retrain(original, [1, 2]), "must map"),
        (lambda: baselines.finetune(original, forget, rounds=0), "rounds"),
        (
            lambda: baselines.gradient_ascent(original, forget, config=baselines.AscentConfig(max_steps=0)),
            "max_steps",
        ),
        (lambda: baselines.gradient_ascent(original, forget, repair_rounds=-1), "repair_rounds"),
        (lambda: baselines.pga(original, {0: forget[0], 1: held[:3]}), "one client"),
        (lambda: baselines.pga(baselines.Original(CONFIG, original.state_dict), forget), "last local model"),
        (lambda: baselines.pga(original, forget, config=baselines.PGAConfig(radius=-1.0)), "radius"),
        (lambda: baselines.federaser(baselines.Original(CONFIG, original.state_dict), forget), "stored"),
        (lambda: baselines.federaser(original, forget, calibration_epochs=0), "calibration_epochs"),
        (lambda: baselines.FedEraserStore(every=0), "interval"),
        (lambda: baselines.SisaConfig(shards=0).validate(), "shards"),
        (lambda: baselines.SisaConfig(aggregate="max").validate(), "aggregate"),
    ]
    for call, match in cases:
        with pytest.raises(ValueError, match=match):
            call()
    x, y, ids, factory = _central()
    with pytest.raises(ValueError, match="cannot fill"):
        baselines.sisa_train(factory, x[:5], y[:5], ids[:5], baselines.SisaConfig(shards=3, slices=2))
    with pytest.raises(ValueError, match="same length"):
        baselines.amnesiac_train(factory(0), x, y[:-1], ids)
    with pytest.raises(ValueError, match="empty"):
        baselines.ascent_delta(factory(0), (x[:0], y[:0]), baselines.AscentConfig())


# ------------------------------------------------------------------------------------- observation
@pytest.mark.parametrize(
    ("method", "kwargs", "rounds"),
    [
        ("retrain", {}, [1, 2]),
        ("finetune", {"rounds": 2}, [1, 2]),
        ("gradient-ascent", {"repair_rounds": 1}, [1, 2]),
        ("pga", {"repair_rounds": 2}, [1, 2, 3]),
        ("federaser", {}, [1, 2]),
    ],
)
def test_observe_sees_every_round_changes_nothing_and_is_not_counted(
    trained: tuple, forget: dict, method: str, kwargs: dict, rounds: list[int]
) -> None:
    import time

    _, original = trained
    run = baselines.get(method).run
    plain = run(original, forget, **kwargs)
    seen: list[tuple[int, dict[str, torch.Tensor]]] = []
    pause = 0.2

    def observe(round_: int, state: dict[str, torch.Tensor]) -> None:
        seen.append((round_, {k: v.clone() for k, v in state.items()}))
        time.sleep(pause)  # an observer's time must be left out of the method's seconds

    start = time.perf_counter()
    observed = run(original, forget, observe=observe, **kwargs)
    wall = time.perf_counter() - start
    assert [r for r, _ in seen] == rounds
    assert _equal(observed.state_dict, plain.state_dict)  # observing changes nothing
    final = seen[-1][1]
    assert all(torch.equal(final[k], observed.state_dict[k].to(final[k].dtype)) for k in final)
    assert wall - observed.seconds >= pause * len(rounds) * 0.99
    with pytest.raises(ValueError, match="callable"):
        run(original, forget, observe="not a function", **kwargs)
