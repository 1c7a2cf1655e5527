"""Tests for the in-process FedAvg (fedforget.federated) and the Forsaken benchmark's main function."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from fedforget import data, federated, models, training
from fedforget.client_data import ClientData
from fedforget.config import RunConfig
from fedforget.federated import client_seed, fedavg


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _config(**changes: object) -> RunConfig:
    values = {"dataset": "digits", "num_clients": 2, "num_rounds": 1, "local_epochs": 1, "seed": 3}
    values.update(changes)
    config = RunConfig(**values)
    return config.replace(model=models.resolve_model_name(config.model, data.load(config).info))


def _assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = 1e-6) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=atol, rtol=1e-5, msg=key)


def test_fedavg_is_the_weighted_average_of_hand_trained_clients() -> None:
    config = _config(partitioning="dirichlet")  # clients of different sizes
    info = data.load(config).info
    start = models.build_model(config.model, info, seed=config.seed)
    states, sizes = [], []
    for pid in range(config.num_clients):
        client = ClientData.for_partition(config, pid)
        model = models.build_model(config.model, info, seed=config.seed)
        model.load_state_dict(start.state_dict())
        training.train(
            model,
            client.x_train,
            client.y_train,
            epochs=config.local_epochs,
            learning_rate=config.learning_rate,
            batch_size=config.batch_size,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
            seed=config.seed * 1_000_003 + 1 * 1_009 + pid,
        )
        states.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        sizes.append(len(client.train_ids))
    assert sizes[0] != sizes[1]  # so the weighting matters
    expected = {k: sum(n * s[k] for n, s in zip(sizes, states, strict=True)) / sum(sizes) for k in states[0]}

    result = fedavg(config)
    _assert_close(result.state_dict, expected)
    # ... and not the unweighted mean
    unweighted = {k: (states[0][k] + states[1][k]) / 2 for k in states[0]}
    assert any(not torch.allclose(result.state_dict[k], unweighted[k], atol=1e-6) for k in unweighted)
    assert [row["round"] for row in result.history] == [0, 1]
    model = models.build_model(config.model, info)
    model.load_state_dict(result.state_dict)
    dataset = data.load(config)
    accuracy = training.evaluate(model, dataset.x_test, dataset.y_test).accuracy
    assert result.test_accuracy == pytest.approx(accuracy)
    assert result.seconds > 0
    assert client_seed(config, 1, 1) == config.seed * 1_000_003 + 1_009 + 1


def test_excluded_samples_never_reach_training(monkeypatch: pytest.MonkeyPatch) -> None:
    config = _config(num_rounds=2)
    clients = [ClientData.for_partition(config, pid) for pid in range(config.num_clients)]
    excluded = {0: clients[0].train_ids[::7], 1: clients[1].train_ids[:5]}
    # rows by content: an excluded row may only show up if an identical row is kept
    kept_rows = {
        row.tobytes()
        for c in clients
        for gid, row in zip(c.train_ids, c.x_train, strict=True)
        if gid not in excluded.get(c.partition_id, ())
    }
    forbidden = {
        row.tobytes()
        for c in clients
        for gid, row in zip(c.train_ids, c.x_train, strict=True)
        if gid in excluded.get(c.partition_id, ())
    } - kept_rows
    assert forbidden
    calls: list[tuple[int, set[bytes]]] = []
    real_train = training.train

    def spy(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, **kwargs: object) -> object:
        calls.append((len(x), {row.tobytes() for row in x}))
        return real_train(model, x, y, **kwargs)

    monkeypatch.setattr(training, "train", spy)
    fedavg(config, exclude=excluded)
    assert len(calls) == config.num_rounds * config.num_clients
    expected_sizes = [len(c.train_ids) - len(excluded[c.partition_id]) for c in clients]
    assert [n for n, _ in calls] == expected_sizes * config.num_rounds
    for _, rows in calls:
        assert not rows & forbidden

    # a client left with nothing contributes weight 0: the result is the other client's model alone
    calls.clear()
    everything = {0: clients[0].train_ids}
    alone = fedavg(config, exclude=everything)
    assert [n for n, _ in calls] == [len(clients[1].train_ids)] * config.num_rounds
    info = data.load(config).info
    model = models.build_model(config.model, info, seed=config.seed)
    for server_round in range(1, config.num_rounds + 1):
        real_train(
            model,
            clients[1].x_train,
            clients[1].y_train,
            epochs=config.local_epochs,
            learning_rate=config.learning_rate,
            batch_size=config.batch_size,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
            seed=client_seed(config, server_round, 1),
        )
    _assert_close(alone.state_dict, dict(model.state_dict()))
    with pytest.raises(ValueError, match="outside"):
        fedavg(config, exclude={5: np.array([1])})


def test_fedavg_is_deterministic_and_exclusion_changes_the_model() -> None:
    config = _config(num_rounds=2)
    a, b = fedavg(config), fedavg(config)
    _assert_close(a.state_dict, b.state_dict, atol=0)
    assert [r["test-accuracy"] for r in a.history] == [r["test-accuracy"] for r in b.history]
    c = fedavg(config, exclude={0: ClientData.for_partition(config, 0).train_ids[:10]})
    assert any(not torch.equal(a.state_dict[k], c.state_dict[k]) for k in a.state_dict)
    # continuing from a state: initial_state + rounds
    d = fedavg(config, initial_state=a.state_dict, rounds=0)
    _assert_close(d.state_dict, a.state_dict, atol=0)


def test_weighted_average_matches_flowers_aggregation() -> None:
    from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict
    from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

    rng = np.random.default_rng(0)
    states = [{"w": rng.normal(size=(3, 4)).astype(np.float32), "b": rng.normal(size=4).astype(np.float32)}]
    states.append({k: v + 1 for k, v in states[0].items()})
    weights = [30.0, 70.0]
    records = [
        RecordDict(
            {
                "arrays": ArrayRecord({k: Array(v) for k, v in s.items()}),
                "metrics": MetricRecord({"num-examples": w}),
            }
        )
        for s, w in zip(states, weights, strict=True)
    ]
    flower = aggregate_arrayrecords(records, "num-examples")
    ours = federated.weighted_average(states, weights)
    for key in ours:
        np.testing.assert_array_equal(ours[key], flower[key].numpy())


# ---------------------------------------------------------------------------- against the Flower server
def test_fedavg_equals_the_flower_server_loop_with_the_real_client_app(tmp_path: Path) -> None:
    from flwr.supercore.task_identity import TaskIdentity

    from server.loop import run_federated_training
    from server.setup import prepare_run
    from simulations.run import resolve_run_config
    from tests.inprocess import InProcessGrid

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 0
    run_config = resolve_run_config(
        {
            "num-clients": 3,
            "num-rounds": 2,
            "local-epochs": 1,
            "seed": 1,
            "partitioning": "dirichlet",
            "run-dir": str(tmp_path / "runs"),
        },
        None,
    )
    run = prepare_run(run_config)
    arrays = run_federated_training(InProcessGrid(run_config, tmp_path), run)  # type: ignore[arg-type]
    ours = fedavg(run.config)
    _assert_close(ours.state_dict, arrays.to_torch_state_dict(), atol=1e-6)
    flower_rows = [r for r in run.record.metrics() if r.get("phase") == "train"]
    assert [r["test-accuracy"] for r in flower_rows] == pytest.approx(
        [r["test-accuracy"] for r in ours.history[1:]], abs=1e-9
    )


# ---------------------------------------------------------------------------- the benchmark, tiny
def test_benchmark_main_judges_with_the_servers_judge_and_counts_the_cost(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from simulations import forsaken_benchmark

    out = tmp_path / "bench" / "b.json"
    argv = ["--quick", "--datasets", "memorise", "--rounds", "4", "--forsaken-steps", "3"]
    argv += ["--unlearn-rounds", "1", "--forsaken", "patience=3", "--out", str(out)]
    assert forsaken_benchmark.main(argv) == 0
    doc = json.loads(out.read_text())
    md = out.with_suffix(".md").read_text()
    assert doc["command"].endswith(" ".join(argv))
    assert doc["forsaken-overrides"] == {"patience": 3} and "ForsakenConfig changed: patience=3" in md
    (case,) = doc["cases"]
    assert case["case"] == "memorise/iid/mlp/samples/0.05" and case["variant"] == "patience=3"
    # judged by the server's judge (every attack), never by the steering oracle
    assert case["judge"] == "loss" and case["attacks"] == ["loss", "shokri", "lira"]
    for a in case["attacks"]:
        assert 0 <= case[f"judge-auc-{a}"] <= 1 and 0 <= case[f"auc-forsaken-{a}"] <= 1
        assert case[f"verdict-forsaken-{a}"] in forsaken_benchmark.VERDICT_SHORT
        for arm in ("forsaken", "retrain"):  # FR is a number exactly when the judgement is measured
            assert (case[f"fr-{arm}-{a}"] is None) is (case[f"fr-status-{arm}-{a}"] != "measured")
        # the AUC difference's standard error grows as the forget set shrinks: ~1/sqrt(n) at least
        se = case[f"auc-diff-se-forsaken-{a}"]
        assert se == pytest.approx(math.hypot(case[f"auc-se-forsaken-{a}"], case[f"auc-se-retrain-{a}"]))
        assert 0.5 / math.sqrt(12 * case["num-forget"]) < se < 0.5
        # the diagnostic beside it: the same attack against the owner's held-out samples only
        for arm in ("forsaken", "retrain"):
            assert 0 <= case[f"auc-owner-heldout-{arm}-{a}"] <= 1
    # memorise is memorised: the headline attack sees it on the original model
    assert case["judge-measurable-loss"] and case["judge-auc-loss"] >= 0.65
    # cost: sample-passes counted for both arms; retraining = 2 passes per sample per local epoch at least
    train = case["client-0-train"]  # client 0 alone: a lower bound
    assert case["passes-retrain"]["backward"] >= 4 * 3 * (train - case["num-forget"])
    assert case["passes-unlearn"]["total"] > 0 and case["pass-ratio"] == pytest.approx(
        case["passes-retrain"]["total"] / case["passes-unlearn"]["total"]
    )
    assert case["bytes-unlearn"] < case["bytes-retrain"] and case["seconds-unlearn"] > 0
    # the never-seen samples lent with every unlearning round are paid for in the bytes sent
    assert case["lent-bytes"] > 0 and case["bytes-unlearn"] > case["unlearn-rounds"] * case["lent-bytes"]
    assert set(case["targets"]) == {
        "retrain-equivalent",
        "accuracy",
        "sample-passes",
        "wall",
        "bytes",
        "paper-fr",
    }
    assert case["unlearn-rounds"] == 1 and case["forsaken-steps"] <= 3
    assert doc["summary"]["patience=3"]["cases"] == 1
    assert "| memorise/iid/mlp/samples/0.05 | patience=3 | 0 |" in md and "**Summary per variant**" in md
    owner = doc["summary"]["patience=3"]["auc-owner-heldout-mean"]
    assert owner["forsaken"]["loss"] == pytest.approx(case["auc-owner-heldout-forsaken-loss"])
    assert "against the withdrawing client's own held-out data" in md
    assert "memorise/iid/mlp/samples/0.05" in capsys.readouterr().out
    # --render rebuilds the same markdown (and summary) from the JSON alone
    written = md
    assert forsaken_benchmark.main(["--render", str(out)]) == 0
    assert out.with_suffix(".md").read_text() == written
    assert json.loads(out.read_text())["summary"] == doc["summary"]


def test_benchmark_variants_share_the_original_and_the_retrain_and_ulira_compares_models(
    tmp_path: Path,
) -> None:
    from simulations import forsaken_benchmark

    out = tmp_path / "b.json"
    argv = ["--quick", "--datasets", "memorise", "--rounds", "2", "--forsaken-steps", "2"]
    argv += ["--unlearn-rounds", "1", "--variants", "default", "focus=1", "--ulira", "1", "--out", str(out)]
    assert forsaken_benchmark.main(argv) == 0
    doc = json.loads(out.read_text())
    first, second = doc["cases"]
    assert [first["variant"], second["variant"]] == ["default", "focus=1"]
    for key in ("acc-retrain", "passes-retrain", "fr-retrain-loss", "auc-retrain-loss", "acc-original"):
        assert first[key] == second[key], key
    ulira = second["ulira"]
    assert set(ulira) == {"loss", "shokri", "lira"}
    assert all(u["num-unlearned-models"] == 2 and 0 <= u["accuracy"] <= 1 for u in ulira.values())
    assert "**U-LiRA check**" in out.with_suffix(".md").read_text()


def test_benchmark_heals_with_the_federations_next_round_and_rechecks_at_cumulative_cost(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from simulations import forsaken_benchmark

    out = tmp_path / "b.json"
    argv = ["--quick", "--datasets", "memorise", "--rounds", "2", "--forsaken-steps", "2"]
    argv += ["--unlearn-rounds", "1", "--heal", "1", "--recheck", "--baselines", "retrain"]
    assert forsaken_benchmark.main([*argv, "--out", str(out)]) == 0
    plain, retrained, healed, rechecked, retrained_healed = json.loads(out.read_text())["cases"]
    assert [(c["variant"], c["method"]) for c in (plain, retrained, healed, rechecked, retrained_healed)] == [
        ("default", "forsaken"),
        ("retrain", "retrain"),
        ("default+heal1", "forsaken"),
        ("default+heal1+recheck", "forsaken"),
        ("retrain+heal1", "retrain"),  # the reference given the same round: never rechecked
    ]
    moved = [retrained_healed[f"auc-forsaken-{a}"] - retrained[f"auc-forsaken-{a}"] for a in plain["attacks"]]
    assert any(m != 0 for m in moved)  # the round trained the retrained model too
    # one FedAvg round of every client on its remaining data: 2 passes per sample per local epoch at least
    heal_passes = healed["passes-unlearn"]["total"] - plain["passes-unlearn"]["total"]
    assert heal_passes >= 2 * 3 * (healed["client-0-train"] - healed["num-forget"])
    assert healed["profile-unlearn"]["heal"]["passes"] == heal_passes
    assert rechecked["passes-unlearn"]["total"] > healed["passes-unlearn"]["total"]
    assert plain["bytes-unlearn"] < healed["bytes-unlearn"] < rechecked["bytes-unlearn"]
    assert healed["heal-rounds"] == rechecked["heal-rounds"] == 1 and rechecked["recheck-rounds"] == 1
    assert healed["acc-forsaken"] != plain["acc-forsaken"]  # the round trained the model
    with pytest.raises(SystemExit):
        forsaken_benchmark.parse_args(["--recheck"])
    assert "needs --heal ROUNDS >= 1" in capsys.readouterr().err


def test_benchmark_forsaken_overrides_are_typed_and_checked(capsys: pytest.CaptureFixture[str]) -> None:
    from simulations.forsaken_benchmark import parse_args

    args = parse_args(["--forsaken", "escalation=0.1", "patience=4", "objective=hinge", "progress=true"])
    assert args.forsaken == {"escalation": 0.1, "patience": 4, "objective": "hinge", "progress": True}
    assert parse_args([]).forsaken == {}
    for bad, message in (
        ("escalation", "expected KEY=VALUE"),
        ("no_such_field=1", "expected KEY=VALUE"),
        ("seed=3", "other than seed"),
        ("patience=two", "is not of type int"),
        ("escalation=1.5", "escalation must be in"),
    ):
        with pytest.raises(SystemExit):
            parse_args(["--forsaken", bad])
        assert message in capsys.readouterr().err, bad


def test_benchmark_plan() -> None:
    from simulations.forsaken_benchmark import plan

    full = plan(["location", "adult", "digits"], ["iid", "dirichlet"], extras=True, seeds=[0, 1])
    names = [(g.dataset, g.partitioning, g.model, g.fractions, g.seed) for g in full]
    assert ("location", "iid", "auto", (0.01, 0.05, 0.10), 1) in names
    assert ("adult", "iid", "logreg", (0.05,), 0) in names and ("adult", "iid", "svm", (0.05,), 1) in names
    assert ("digits", "dirichlet", "auto", (0.05,), 0) in names and len(full) == 2 * 8
    chosen = plan(["location", "memorise"], ["iid"], extras=False, fractions=[0.2, 0.3])
    assert [(g.dataset, g.fractions) for g in chosen] == [("location", (0.2, 0.3)), ("memorise", (0.2, 0.3))]
    quick = plan(["memorise", "location"], ["iid"], extras=False)
    assert [(g.dataset, g.partitioning, g.fractions, g.seed) for g in quick] == [
        ("memorise", "iid", (0.05,), 0),
        ("location", "iid", (0.05,), 0),
    ]


def test_benchmark_client_grain_runs_baselines_from_the_same_original_and_retraining_matches_itself(
    tmp_path: Path,
) -> None:
    from simulations import forsaken_benchmark

    out = tmp_path / "b.json"
    argv = [
        "--quick",
        "--datasets",
        "memorise",
        "--rounds",
        "2",
        "--forsaken-steps",
        "2",
        "--unlearn-rounds",
        "1",
    ]
    argv += ["--grain", "client", "--baselines", "retrain", "federaser", "retrain-reseeded"]
    argv += ["--out", str(out)]
    assert forsaken_benchmark.main(argv) == 0
    cases = json.loads(out.read_text())["cases"]
    assert [(c["variant"], c["method"]) for c in cases] == [
        ("default", "forsaken"),
        ("retrain", "retrain"),
        ("federaser", "federaser"),
        ("retrain-reseeded", "retrain-reseeded"),
    ]
    assert all(c["case"] == "memorise/iid/mlp/client" for c in cases)
    assert cases[0]["num-forget"] == cases[0]["client-0-train"]  # the whole client withdraws
    again = cases[1]  # retraining judged against retraining: the same model, so the same numbers
    for a in again["attacks"]:
        assert again[f"auc-forsaken-{a}"] == again[f"auc-retrain-{a}"]
        assert again[f"verdict-forsaken-{a}"] in ("retrain-equivalent", "not-measurable")
        assert again[f"auc-owner-heldout-forsaken-{a}"] == again[f"auc-owner-heldout-retrain-{a}"]
    assert again["acc-forsaken"] == again["acc-retrain"]
    assert again["passes-unlearn"] == again["passes-retrain"] and again["pass-ratio"] == 1.0
    assert cases[2]["baseline"]["storage-bytes"] > 0  # FedEraser kept its updates to unlearn
    # the noise floor: retraining again from another initial model, judged like any method
    floor = cases[3]
    assert floor["training-seed"] == 1_000 * floor["seed"] + 1
    assert floor["passes-unlearn"]["backward"] == floor["passes-retrain"]["backward"]  # the same work
    assert any(floor[f"auc-forsaken-{a}"] != floor[f"auc-retrain-{a}"] for a in floor["attacks"])
    assert all(floor[f"verdict-forsaken-{a}"] in forsaken_benchmark.VERDICT_SHORT for a in floor["attacks"])
    md = out.with_suffix(".md").read_text()
    assert "**The verdict's noise floor** (retrain-reseeded)" in md
    assert "it meets the forgetting target (retrain-equivalent under every measurable attack) in" in md
    with pytest.raises(ValueError, match="k must be >= 1"):
        forsaken_benchmark.other_training_seed(RunConfig(), 0)


def test_benchmark_summary_says_how_far_retraining_sits_from_half_and_whether_an_arm_follows_it() -> None:
    from simulations.forsaken_benchmark import summarise

    target_keys = ("retrain-equivalent", "accuracy", "sample-passes", "wall", "bytes", "paper-fr")
    retrained = [0.40, 0.50, 0.65, 0.55]
    follows = [r + 0.02 for r in retrained]  # off by a constant: r = 1
    flat = [0.52, 0.49, 0.51, 0.50]  # near 0.5 whatever retraining does
    cases = []
    for variant, arm in (("follows", follows), ("flat", flat)):
        for r, a in zip(retrained, arm, strict=True):
            cases.append(
                {
                    "variant": variant,
                    "attacks": ["loss"],
                    "auc-forsaken-loss": a,
                    "auc-retrain-loss": r,
                    "auc-diff-forsaken-loss": a - r,
                    "verdict-forsaken-loss": "retrain-equivalent",
                    "targets": dict.fromkeys(target_keys, True),
                    "pass-ratio": 1.0,
                    "speedup": 1.0,
                    "bytes-ratio": 1.0,
                    "acc-loss": 0.0,
                    "acc-below-retrain": 0.0,
                }
            )
    summary = summarise(cases)
    assert summary["follows"]["auc-correlation"]["loss"] == pytest.approx(1.0)
    assert summary["flat"]["auc-correlation"]["loss"] < 0.5
    assert summary["flat"]["auc-retrain-offset-mean"]["loss"] == pytest.approx((0.1 + 0 + 0.15 + 0.05) / 4)
    assert summarise(cases[:2])["follows"]["auc-correlation"]["loss"] is None  # too few cases


def test_benchmark_withdraws_a_class_or_a_client_once_per_original_whatever_the_extra_fractions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from simulations import forsaken_benchmark

    monkeypatch.setitem(forsaken_benchmark.EXTRA_FRACTIONS, ("memorise", "iid", "auto"), (0.05, 0.1))
    base = ["--datasets", "memorise", "--partitionings", "iid", "--rounds", "2", "--forsaken-steps", "1"]
    base += ["--unlearn-rounds", "1", "--no-bar"]
    for grain, expected in (
        ("class", ["memorise/iid/mlp/class/0"]),
        ("samples", ["memorise/iid/mlp/samples/0.05", "memorise/iid/mlp/samples/0.1"]),
    ):
        out = tmp_path / f"{grain}.json"
        assert forsaken_benchmark.main([*base, "--grain", grain, "--out", str(out)]) == 0
        assert [c["case"] for c in json.loads(out.read_text())["cases"]] == expected
