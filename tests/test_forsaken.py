"""Forsaken unlearning (fedforget.forsaken): forgetting, exact masks, determinism, stopping rules, errors."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from fedforget import forsaken
from fedforget.data import load_dataset
from fedforget.forsaken import surrogate, targets
from fedforget.forsaken.oracle import per_sample_loss, youden_threshold
from fedforget.models import build_model
from fedforget.training import evaluate, train

RECIPE = {"epochs": 30, "learning_rate": 0.05, "batch_size": 32, "momentum": 0.9}


class TinyLossOracle:
    """A loss-threshold membership oracle: member when exp(-loss) >= threshold (Youden on the target)."""

    def __init__(self, model: nn.Module, members: tuple, nonmembers: tuple) -> None:
        self.threshold = youden_threshold(self.scores(model, *members), self.scores(model, *nonmembers))

    def scores(self, model: nn.Module, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.exp(-per_sample_loss(model, x, y))

    def decide(self, model: nn.Module, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return self.scores(model, x, y) >= self.threshold


@dataclasses.dataclass
class Setup:
    model: nn.Module
    forget: tuple[np.ndarray, np.ndarray]
    reference: tuple[np.ndarray, np.ndarray]
    retain: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]
    oracle: TinyLossOracle


def _setup(model_name: str, dataset: str = "memorise", num_members: int = 500) -> Setup:
    """A model trained on ``num_members`` samples (memorise, synthetic: overfitted); forget 5 % of them;
    150 never-seen reference samples; the oracle's threshold is fitted on 200 more never-seen samples."""
    data = load_dataset(dataset)
    order = np.random.default_rng(0).permutation(data.num_train)
    members = order[:num_members]
    reference, held = order[num_members : num_members + 150], order[num_members + 150 : num_members + 350]
    x, y = data.x_train, data.y_train
    model = build_model(model_name, data.info, seed=0)
    train(model, x[members], y[members], seed=0, **RECIPE)
    num_forget = round(0.05 * num_members)
    forget, retain = members[:num_forget], members[num_forget:]
    oracle = TinyLossOracle(model, (x[retain[:200]], y[retain[:200]]), (x[held], y[held]))
    return Setup(
        model=model,
        forget=(x[forget], y[forget]),
        reference=(x[reference], y[reference]),
        retain=(x[retain], y[retain]),
        test=(data.x_test, data.y_test),
        oracle=oracle,
    )


@pytest.fixture(scope="module")
def memorise_mlp() -> Setup:
    return _setup("mlp")


@pytest.fixture(scope="module")
def fr_result(memorise_mlp: Setup) -> forsaken.ForsakenResult:
    s = memorise_mlp
    return forsaken.unlearn(
        s.model,
        forget=s.forget,
        reference=s.reference,
        retain=s.retain,
        config=forsaken.ForsakenConfig(),
        oracle=s.oracle,
    )


def _member_fraction(setup: Setup, model: nn.Module) -> float:
    return float(setup.oracle.decide(model, *setup.forget).mean())


# ------------------------------------------------------------------------------------------ forgetting
def test_forsaken_forgets_an_overfitted_mlp_and_keeps_test_accuracy(
    memorise_mlp: Setup, fr_result: forsaken.ForsakenResult
) -> None:
    s, result = memorise_mlp, fr_result
    assert _member_fraction(s, s.model) >= 0.9  # the oracle sees the forget set as members
    assert result.stopped_because == "target-fr"
    assert _member_fraction(s, result.model) <= 0.1
    assert result.final["fr"] >= 0.9
    before, after = evaluate(s.model, *s.test).accuracy, evaluate(result.model, *s.test).accuracy
    assert after >= before - 0.03, (before, after)
    assert result.final["retain_acc"] >= 0.97
    # the history: step 0 is the original model, then one row per step, all with the documented columns
    assert [row["step"] for row in result.history] == list(range(len(result.history)))
    assert result.history[0]["fr"] == 0.0 and result.history[0]["forget_acc"] == 1.0
    for key in ("objective", "forget_loss", "retain_loss", "reference_loss", "forget_acc", "auc", "seconds"):
        assert all(np.isfinite(row[key]) for row in result.history), key
    assert 0 < result.neurons_touched <= result.num_neurons == 256 + 128 + 30


def test_mask_is_the_exact_difference_and_apply_mask_reproduces_the_model(
    memorise_mlp: Setup, fr_result: forsaken.ForsakenResult
) -> None:
    original = dict(memorise_mlp.model.named_parameters())
    unlearned = dict(fr_result.model.named_parameters())
    assert set(fr_result.mask) == set(original)
    for name, delta in fr_result.mask.items():
        torch.testing.assert_close(
            delta, unlearned[name].detach() - original[name].detach(), rtol=0, atol=1e-6
        )
    rebuilt = forsaken.apply_mask(memorise_mlp.model, fr_result.mask)
    for name, p in rebuilt.named_parameters():
        assert torch.equal(p, unlearned[name]), name
    assert any(bool((d != 0).any()) for d in fr_result.mask.values())
    half = forsaken.apply_mask(memorise_mlp.model, fr_result.mask, scale=0.5)
    for name, p in half.named_parameters():
        torch.testing.assert_close(p, original[name] + 0.5 * fr_result.mask[name])


def test_the_input_model_is_not_modified(memorise_mlp: Setup) -> None:
    s = memorise_mlp
    state = copy.deepcopy(s.model.state_dict())
    s.model.train()
    config = forsaken.ForsakenConfig(max_steps=2)
    result = forsaken.unlearn(
        s.model, forget=s.forget, reference=s.reference, retain=s.retain, config=config, oracle=s.oracle
    )
    assert result.model is not s.model
    assert s.model.training  # the mode is left as it was
    for key, value in s.model.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert all(p.requires_grad for p in s.model.parameters())


def test_a_fixed_seed_gives_the_same_mask_and_history(memorise_mlp: Setup) -> None:
    s = memorise_mlp
    config = forsaken.ForsakenConfig(max_steps=3, seed=5)
    runs = [
        forsaken.unlearn(
            s.model, forget=s.forget, reference=s.reference, retain=s.retain, config=config, oracle=s.oracle
        )
        for _ in range(2)
    ]
    for name in runs[0].mask:
        assert torch.equal(runs[0].mask[name], runs[1].mask[name]), name
    strip = [[{k: v for k, v in row.items() if k != "seconds"} for row in run.history] for run in runs]
    assert strip[0] == strip[1]
    other = forsaken.unlearn(
        s.model,
        forget=s.forget,
        reference=s.reference,
        retain=s.retain,
        config=config.replace(seed=6),
        oracle=s.oracle,
    )
    assert any(not torch.equal(other.mask[n], runs[0].mask[n]) for n in other.mask)


def test_the_accuracy_guard_is_relative_to_the_given_baseline(memorise_mlp: Setup) -> None:
    """accuracy_baseline (the model before an attempt's first round) replaces the model's own accuracies
    as the guard's reference point: above what any step reaches, no step is applied."""
    s = memorise_mlp
    config = forsaken.ForsakenConfig(max_steps=3)

    def unlearn(baseline: object = None) -> forsaken.ForsakenResult:
        return forsaken.unlearn(
            s.model,
            forget=s.forget,
            reference=s.reference,
            retain=s.retain,
            config=config,
            oracle=s.oracle,
            accuracy_baseline=baseline,
        )

    own = unlearn()
    assert own.steps > 0
    start = own.history[0]
    assert start["reference_acc"] <= 0.96  # a baseline of 1.0 is out of any step's reach
    same = unlearn({key: start[key] for key in forsaken.GUARDED})
    assert [r["fr"] for r in same.history] == [r["fr"] for r in own.history]  # its own start: the same run
    strict = unlearn({"retain_acc": 1.0, "reference_acc": 1.0})
    assert strict.steps == 0 and not any(bool((d != 0).any()) for d in strict.mask.values())
    for baseline, message in (
        ({"retain_acc": 0.9}, "lacks reference_acc"),
        ({"retain_acc": 0.9, "reference_acc": 1.5}, r"must be an accuracy in \[0, 1\]"),
        ([0.9, 0.9], "must be a mapping"),
    ):
        with pytest.raises((ValueError, TypeError), match=message):
            unlearn(baseline)


def test_a_repair_phase_wins_accuracy_back_and_lets_forgetting_go_on() -> None:
    """digits, a tight accuracy budget: forgetting stalls with the guard binding. Without repair the run
    stops there; with it, a repair phase (kept only where it widens the guard's slack) resets the
    escalation and forgetting goes on from the same trajectory, so the best state is at least as good."""
    s = _setup("mlp", "digits", num_members=500)

    def run(repair_steps: int) -> forsaken.ForsakenResult:
        config = forsaken.ForsakenConfig(
            max_accuracy_drop=0.01, target_fr=1.0, max_steps=40, repair_steps=repair_steps
        )
        return forsaken.unlearn(
            s.model, forget=s.forget, reference=s.reference, retain=s.retain, config=config, oracle=s.oracle
        )

    plain, repaired = run(0), run(30)
    assert plain.stopped_because == "stalled" and not any(r.get("repair") for r in plain.history)
    repairs = [i for i, r in enumerate(repaired.history) if r.get("repair")]
    assert repairs, "no repair phase ran"
    # the same trajectory up to the first repair (the stall where the plain run stopped)
    prefix = repairs[0]
    assert [r["fr"] for r in repaired.history[:prefix]] == [r["fr"] for r in plain.history[:prefix]]
    assert len(plain.history) == prefix
    guard = {key: repaired.history[0][key] for key in forsaken.GUARDED}

    def slack(row: dict) -> float:
        return min(row[key] - guard[key] for key in forsaken.GUARDED)

    for i in repairs:
        assert slack(repaired.history[i]) > slack(repaired.history[i - 1])  # kept only where it helps
        assert repaired.history[i]["flatten"] == 0.0  # the escalation starts over
    assert any(r["accepted"] and not r.get("repair") for r in repaired.history[prefix + 1 :])
    assert repaired.final["fr"] >= plain.final["fr"]
    assert repaired.final is repaired.history[repaired.best_step]
    assert len(repaired.history) - 1 <= 40  # a repair phase counts as a step


def test_target_retrain_stops_near_auc_one_half_before_target_fr() -> None:
    # digits: never-seen samples are judged members too (a retrained model has FR ~0), so FR >= 0.9 means
    # over-forgetting, while looking like never-seen data (AUC ~0.5) comes much sooner
    s = _setup("mlp", "digits", num_members=600)
    fr = forsaken.unlearn(
        s.model,
        forget=s.forget,
        reference=s.reference,
        retain=s.retain,
        config=forsaken.ForsakenConfig(),
        oracle=s.oracle,
    )
    config = forsaken.ForsakenConfig(target="retrain")
    result = forsaken.unlearn(
        s.model, forget=s.forget, reference=s.reference, retain=s.retain, config=config, oracle=s.oracle
    )
    assert result.history[0]["auc"] > 0.5 + config.auc_tolerance  # not there at the start
    assert result.stopped_because == "target-auc"
    assert abs(result.final["auc"] - 0.5) <= config.auc_tolerance
    # target="fr" goes on past the retrained look, until FR 0.9 or the accuracy guard stalls it
    assert fr.stopped_because in ("target-fr", "stalled")
    # the returned state is the best accepted one, and it is what the mask holds
    assert fr.final is fr.history[fr.best_step]
    assert fr.final["fr"] == max(r["fr"] for r in fr.history if r["accepted"])
    before = s.oracle.decide(s.model, *s.forget)
    after = s.oracle.decide(forsaken.apply_mask(s.model, fr.mask), *s.forget)
    assert forsaken.forgetting_rate(before, after) == pytest.approx(fr.final["fr"])
    assert fr.steps == sum(1 for r in fr.history[1 : fr.best_step + 1] if r["accepted"])
    # a run whose last accepted step undid a crossing: the result is the earlier, better state
    short = forsaken.unlearn(
        s.model,
        forget=s.forget,
        reference=s.reference,
        retain=s.retain,
        config=forsaken.ForsakenConfig(max_steps=3),
        oracle=s.oracle,
    )
    last = short.history[-1]
    assert last["accepted"] and last["fr"] < max(r["fr"] for r in short.history), "no step undid a crossing"
    assert short.best_step < len(short.history) - 1 and short.final["fr"] > last["fr"]
    after = s.oracle.decide(forsaken.apply_mask(s.model, short.mask), *s.forget)
    assert forsaken.forgetting_rate(before, after) == pytest.approx(short.final["fr"])
    assert short.steps == short.best_step
    assert len(result.history) < len(fr.history)
    assert result.final["fr"] < fr.final["fr"]
    before, after = evaluate(s.model, *s.test).accuracy, evaluate(result.model, *s.test).accuracy
    assert after >= before - 0.02, (before, after)


def test_target_retrain_stops_when_the_forget_confidences_are_distributed_as_the_references(
    memorise_mlp: Setup,
) -> None:
    """The default statistic of ``target="retrain"`` (since the devices steer by lent never-seen
    samples): the confidences in their own labels, to within 0.01 of AUC 0.5."""
    s = memorise_mlp
    config = forsaken.ForsakenConfig(target="retrain", max_steps=40)
    assert config.retrain_statistic == "confidence" and config.auc_tolerance == 0.01
    result = forsaken.unlearn(
        s.model, forget=s.forget, reference=s.reference, retain=s.retain, config=config, oracle=s.oracle
    )

    def confidence(model: nn.Module, pair: tuple) -> np.ndarray:
        with torch.no_grad():
            p = torch.softmax(model(torch.as_tensor(pair[0])).double(), dim=1)
        return p[torch.arange(len(pair[1])), torch.as_tensor(pair[1])].numpy()

    # the history's AUC is the AUC of the model's confidence in each sample's own label, forget vs
    # reference (not the oracle's scores): on the original model and on the unlearned one
    before = forsaken.auc(confidence(s.model, s.forget), confidence(s.model, s.reference))
    assert result.history[0]["auc"] == pytest.approx(before, abs=1e-9) and before > 0.6
    after = forsaken.auc(confidence(result.model, s.forget), confidence(result.model, s.reference))
    assert result.stopped_because == "target-auc"
    assert result.final["auc"] == pytest.approx(after, abs=1e-9)
    assert abs(after - 0.5) <= config.auc_tolerance


def test_without_an_oracle_a_fitted_loss_threshold_proxy_judges(memorise_mlp: Setup) -> None:
    s = memorise_mlp
    result = forsaken.unlearn(
        s.model,
        forget=s.forget,
        reference=s.reference,
        retain=s.retain,
        config=forsaken.ForsakenConfig(max_steps=30),
    )
    assert isinstance(result.oracle, forsaken.LossThresholdOracle)
    assert result.stopped_because == "target-fr"
    assert result.final["member_fraction"] <= 0.1


@pytest.mark.parametrize("model_name", ["logreg", "svm"])
def test_linear_models_logreg_and_hinge_svm(model_name: str) -> None:
    s = _setup(model_name)
    assert _member_fraction(s, s.model) >= 0.9
    result = forsaken.unlearn(
        s.model,
        forget=s.forget,
        reference=s.reference,
        retain=s.retain,
        config=forsaken.ForsakenConfig(),
        oracle=s.oracle,
    )
    assert result.stopped_because == "target-fr"
    assert _member_fraction(s, result.model) <= 0.1
    before, after = evaluate(s.model, *s.test).accuracy, evaluate(result.model, *s.test).accuracy
    assert after >= before - 0.03, (before, after)


# ------------------------------------------------------------------------------------------ ablation
@pytest.mark.parametrize("gates", ["fixed", "none"])
def test_the_ablations_run_the_same_loop_without_the_trained_generator(
    memorise_mlp: Setup, gates: str
) -> None:
    """gates="fixed" (every gate 1) and "none" (plain fine-tuning on J) give a finite mask over every
    parameter, through the same line search, guard and stopping; the generator is never trained, and
    the mask differs from the learned generator's."""
    s = memorise_mlp
    config = forsaken.ForsakenConfig(max_steps=3, seed=2)

    def run(gates: str) -> forsaken.ForsakenResult:
        return forsaken.unlearn(
            s.model,
            forget=s.forget,
            reference=s.reference,
            retain=s.retain,
            config=config.replace(gates=gates),
            oracle=s.oracle,
        )

    learned, ablated = run("learned"), run(gates)
    shapes = {n: p.shape for n, p in s.model.named_parameters()}
    assert {n: d.shape for n, d in ablated.mask.items()} == shapes
    assert all(bool(torch.isfinite(d).all()) for d in ablated.mask.values())
    assert ablated.steps > 0 and any(bool((d != 0).any()) for d in ablated.mask.values())
    assert ablated.stopped_because in ("target-fr", "max-steps", "stalled")
    assert any(not torch.equal(ablated.mask[n], learned.mask[n]) for n in shapes)
    initial = forsaken.MaskGenerator.seeded(config.seed, hidden=config.generator_hidden)
    for trained, untouched in zip(ablated.generator.parameters(), initial.parameters(), strict=True):
        assert torch.equal(trained, untouched)
    assert any(
        not torch.equal(a, b)
        for a, b in zip(learned.generator.parameters(), initial.parameters(), strict=True)
    )
    steps = [row for row in ablated.history[1:] if row["accepted"]]
    assert all(row["gated_neurons"] == ablated.num_neurons for row in steps)  # every neuron moves
    if gates == "none":
        assert all(row["sparse"] == 0.0 for row in steps)
    for key in ("objective", "forget_loss", "retain_loss", "fr", "auc"):
        assert all(np.isfinite(row[key]) for row in ablated.history), key


# ------------------------------------------------------------------------------------ architectures
class _ConvBN(nn.Module):
    loss_name = "cross_entropy"

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4 * 8 * 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.bn(self.conv(x))).flatten(1))


def _images(n: int, shape: tuple[int, ...], classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, *shape)).astype(np.float32), rng.integers(0, classes, n)


def test_the_generator_size_does_not_depend_on_the_model() -> None:
    from fedforget.data.base import DatasetInfo

    sizes = {}
    config = forsaken.ForsakenConfig(max_steps=1, target="retrain", auc_tolerance=0.0)
    for name, info in (
        ("mlp", DatasetInfo("t", (64,), 10, "tabular")),
        ("lenet", DatasetInfo("t", (1, 16, 16), 10, "image")),
    ):
        model = build_model(name, info, seed=0)
        x, y = _images(40, info.input_shape, 10, 1)
        result = forsaken.unlearn(
            model, forget=(x[:5], y[:5]), reference=(x[5:20], y[5:20]), retain=(x[20:], y[20:]), config=config
        )
        sizes[name] = sum(p.numel() for p in result.generator.parameters())
        assert result.num_neurons == sum(layer.num_neurons for layer in forsaken.find_layers(model))
    assert sizes["mlp"] == sizes["lenet"] < 1000
    assert (
        sum(p.numel() for p in build_model("lenet", DatasetInfo("t", (1, 16, 16), 10, "image")).parameters())
        > 30 * sizes["lenet"]
    )


def test_batchnorm_follows_its_convolution_and_running_statistics_stay_frozen() -> None:
    torch.manual_seed(0)
    model = _ConvBN()
    x, y = _images(60, (1, 8, 8), 3, 2)
    train(model, x[:40], y[:40], epochs=3, learning_rate=0.05, batch_size=8)
    layers = forsaken.find_layers(model)
    assert [(layer.name, layer.params) for layer in layers] == [
        ("conv", ("conv.weight", "conv.bias", "bn.weight", "bn.bias")),
        ("head", ("head.weight", "head.bias")),
    ]
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    config = forsaken.ForsakenConfig(max_steps=2, target="retrain", auc_tolerance=0.0)
    result = forsaken.unlearn(
        model, forget=(x[:4], y[:4]), reference=(x[40:], y[40:]), retain=(x[4:40], y[4:40]), config=config
    )
    for key, value in result.model.named_buffers():
        assert torch.equal(value, buffers[key]), key
    assert set(result.mask) == {n for n, _ in model.named_parameters()}


# ------------------------------------------------------------------------------------------- errors
@pytest.fixture(scope="module")
def small() -> tuple[nn.Module, tuple, tuple, tuple]:
    from fedforget.data.base import DatasetInfo

    model = build_model("mlp", DatasetInfo("t", (6,), 3, "tabular"), seed=0)
    x, y = _images(30, (6,), 3, 3)
    return model, (x[:5], y[:5]), (x[5:15], y[5:15]), (x[15:], y[15:])


def test_clear_errors_for_bad_inputs(small: tuple) -> None:
    model, forget, reference, retain = small
    x, y = forget

    def unlearn(model: object = model, **changes: object) -> forsaken.ForsakenResult:
        sets = {"forget": forget, "reference": reference, "retain": retain, **changes}
        return forsaken.unlearn(model, **sets)  # type: ignore[arg-type]

    with pytest.raises(ValueError, match="forget is empty"):
        unlearn(forget=(x[:0], y[:0]))
    with pytest.raises(ValueError, match="reference: samples have shape"):
        unlearn(reference=(reference[0][:, :4], reference[1]))
    with pytest.raises(ValueError, match=r"label 7 is outside \[0, 3\)"):
        unlearn(forget=(x, np.array([0, 1, 2, 7, 0])))
    with pytest.raises(ValueError, match="retain: label -1"):
        unlearn(retain=(retain[0], -np.ones(len(retain[1]), dtype=int)))
    with pytest.raises(ValueError, match="5 samples but 4 labels"):
        unlearn(forget=(x, y[:4]))
    with pytest.raises(ValueError, match="labels must be integers"):
        unlearn(forget=(x, y + 0.5))
    with pytest.raises(ValueError, match="NaN or infinite"):
        unlearn(forget=(np.full_like(x, np.nan), y))
    with pytest.raises(TypeError, match="pair"):
        unlearn(forget=x)
    with pytest.raises(TypeError, match="torch.nn.Module"):
        unlearn("model")
    with pytest.raises(TypeError, match="ForsakenConfig"):
        unlearn(config={"target": "fr"})
    with pytest.raises(TypeError, match="membership oracle"):
        unlearn(oracle=object())
    with pytest.raises(ValueError, match="no trainable Linear"):
        unlearn(nn.Sequential(nn.Flatten(), nn.LayerNorm(6)))


def test_the_three_sets_are_keyword_only(small: tuple) -> None:
    """forget, reference and retain are all (x, y) pairs: passed by position they could be swapped
    unnoticed, so unlearn refuses them by position."""
    model, forget, reference, retain = small
    with pytest.raises(TypeError, match="positional argument"):
        forsaken.unlearn(model, forget, reference, retain)  # type: ignore[misc]
    with pytest.raises(TypeError, match="positional argument"):
        forsaken.unlearn(model, forget, reference=reference, retain=retain)  # type: ignore[misc]
    config = forsaken.ForsakenConfig(max_steps=1, target="retrain", auc_tolerance=0.0)
    result = forsaken.unlearn(model, forget=forget, reference=reference, retain=retain, config=config)
    assert set(result.mask) == {n for n, _ in model.named_parameters()}


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        ({"target": "accuracy"}, ValueError, "target must be one of fr, retrain"),
        ({"target_fr": 0.0}, ValueError, r"target_fr must be in \(0, 1\]"),
        ({"target_fr": 1.5}, ValueError, "target_fr"),
        ({"auc_tolerance": 0.5}, ValueError, "auc_tolerance"),
        ({"max_steps": 0}, ValueError, "max_steps must be >= 1"),
        ({"max_steps": 2.5}, TypeError, "max_steps must be an integer"),
        ({"inner_updates": 0}, ValueError, "inner_updates"),
        ({"generator_lr": -1.0}, ValueError, "generator_lr must be > 0"),
        ({"step_size": float("nan")}, ValueError, "step_size must be finite"),
        ({"lambda_retain": -0.1}, ValueError, "lambda_retain must be >= 0"),
        ({"lambda_sparse": "0.1"}, TypeError, "lambda_sparse must be a number"),
        ({"gate_floor": 2.0}, ValueError, "gate_floor"),
        ({"escalation": 1.5}, ValueError, "escalation"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"seed": -1}, ValueError, "seed"),
        ({"progress": "yes"}, TypeError, "progress"),
        ({"patience": True}, TypeError, "patience must be an integer"),
        ({"objective": "l2"}, ValueError, "objective must be one of auto, hinge, kl"),
        ({"targets": "mean"}, ValueError, "targets must be one of rank, class-mean"),
        ({"hinge_margin": -1.0}, ValueError, "hinge_margin must be >= 0"),
        ({"max_scale": 0.5}, ValueError, "max_scale must be >= 1"),
        ({"nonmember_margin": 1.0}, ValueError, r"nonmember_margin must be in \[0, 1\)"),
        ({"focus": 1.5}, ValueError, r"focus must be in \[0, 1\]"),
        ({"repair_steps": -1}, ValueError, "repair_steps must be >= 0"),
        ({"repair_lr": 0.0}, ValueError, "repair_lr must be > 0"),
        ({"max_repairs": 1.5}, TypeError, "max_repairs must be an integer"),
        ({"gates": "random"}, ValueError, "gates must be one of learned, fixed, none"),
        ({"retrain_statistic": "loss"}, ValueError, "retrain_statistic must be 'oracle' or 'confidence'"),
    ],
)
def test_config_validation(changes: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        forsaken.ForsakenConfig(**changes)


def test_config_is_frozen_and_normalised() -> None:
    config = forsaken.ForsakenConfig(target=" Retrain ", max_steps=5.0)
    assert config.target == "retrain" and config.max_steps == 5 and isinstance(config.max_steps, int)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.target = "fr"  # type: ignore[misc]
    assert config.replace(max_steps=7).max_steps == 7


def test_config_fields_come_in_documented_groups_and_stay_flat_keywords() -> None:
    """FIELD_GROUPS partitions ForsakenConfig's fields, in field order; callers still build it from a flat
    dict of overrides (forsaken_benchmark --forsaken, on_device's overrides), never by position."""
    names = [field.name for field in dataclasses.fields(forsaken.ForsakenConfig)]
    grouped = [name for group in forsaken.FIELD_GROUPS.values() for name in group]
    assert grouped == names
    assert {"stopping", "method", "safeguards"} <= set(forsaken.FIELD_GROUPS)
    flat = {"target": "retrain", "step_size": 0.1, "max_accuracy_drop": 0.05, "seed": 3}
    config = forsaken.ForsakenConfig(**flat)
    assert config.group("safeguards")["max_accuracy_drop"] == 0.05
    assert config.group("stopping")["target"] == "retrain" and config.group("run")["seed"] == 3
    assert dataclasses.asdict(config) == {name: getattr(config, name) for name in names}
    with pytest.raises(TypeError):
        forsaken.ForsakenConfig("fr")  # type: ignore[misc]
    with pytest.raises(ValueError, match="no ForsakenConfig group 'paper'"):
        config.group("paper")


def test_apply_mask_errors(small: tuple) -> None:
    model = small[0]
    name, param = next(iter(model.named_parameters()))
    with pytest.raises(KeyError, match="does not have: nope"):
        forsaken.apply_mask(model, {"nope": torch.zeros(1)})
    with pytest.raises(ValueError, match="has shape"):
        forsaken.apply_mask(model, {name: torch.zeros(param.numel() + 1)})
    with pytest.raises(ValueError, match="scale must be a finite number"):
        forsaken.apply_mask(model, {}, scale=float("inf"))
    with pytest.raises(TypeError, match="torch.Tensor"):
        forsaken.apply_mask(model, {name: np.zeros(param.shape)})
    same = forsaken.apply_mask(model, {})
    assert same is not model and all(
        torch.equal(a, b) for a, b in zip(same.parameters(), model.parameters(), strict=True)
    )


# ------------------------------------------------------------------------------- per-sample targets
def _probs(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def test_rank_matched_targets_keep_still_rows_and_match_ranks_within_the_class() -> None:
    probs = _probs([[0.9, 0.1, 0.0], [0.99, 0.01, 0.0], [0.7, 0.3, 0.0], [0.2, 0.8, 0.0]])
    y = torch.tensor([0, 0, 0, 1])
    move = torch.tensor([True, True, False, False])
    # class-0 pool (>= MIN_POOL rows), confidences 0.4 < 0.5 < 0.6 < 0.3-row of class 1
    pool = _probs([[0.6, 0.2, 0.2], [0.4, 0.3, 0.3], [0.5, 0.5, 0.0], [0.3, 0.6, 0.1]])
    pool_y = torch.tensor([0, 0, 0, 1])
    out = targets.rank_matched_targets(probs, y, move, pool, pool_y)
    assert torch.equal(out[2:], probs[2:])  # rows that do not move keep their own vector
    # two movers of class 0 over three pool vectors: quantiles (0.5/2, 1.5/2) x 3 -> ranks 0 and 2;
    # the less confident mover (0.9) gets the lower-ranked pool vector (0.4), the other the top (0.6)
    assert torch.equal(out[0], pool[1]) and torch.equal(out[1], pool[0])


def test_rank_matched_targets_fall_back_to_the_swapped_pool_of_all_classes() -> None:
    probs = _probs([[0.05, 0.05, 0.9]])
    y = torch.tensor([2])  # the pool holds no class-2 vector
    pool = _probs([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.8, 0.1, 0.1]])
    pool_y = torch.tensor([0, 1, 0])
    out = targets.rank_matched_targets(probs, y, torch.tensor([True]), pool, pool_y)
    assert out[0, 2] == 0.7  # the median true-class confidence of the pool (0.6, 0.7, 0.8) moved to class 2
    assert torch.allclose(out[0].sort().values, pool[1].sort().values)  # the same vector, entries swapped
    swapped = targets.swap_to_class(pool, pool_y, 2)
    assert torch.equal(swapped[:, 2], pool[torch.arange(3), pool_y])
    assert torch.allclose(swapped.sort(dim=1).values, pool.sort(dim=1).values)


def test_rank_matched_targets_errors() -> None:
    probs, y = _probs([[0.5, 0.5]]), torch.tensor([0])
    with pytest.raises(ValueError, match="must be N x K"):
        targets.rank_matched_targets(probs, y, torch.tensor([True]), _probs([[1.0, 0.0, 0.0]]), y)
    with pytest.raises(ValueError, match="no pool vectors"):
        targets.rank_matched_targets(probs, y, torch.tensor([True]), probs[:0], y[:0])


def test_nonmember_pool_keeps_only_non_members_and_drops_those_nearest_the_threshold() -> None:
    scores = np.array([0.9, 0.1, 0.2, 0.3, 0.4, 0.45, 0.6])
    assert targets.nonmember_pool(scores, 0.5, 0.0).tolist() == [1, 2, 3, 4, 5]
    kept = targets.nonmember_pool(scores, 0.5, 0.4)  # the two non-members closest to 0.5 are left out
    assert kept.tolist() == [1, 2, 3]
    assert len(targets.nonmember_pool(np.array([0.7, 0.8]), 0.5, 0.2)) == 0


def test_rank_targets_move_only_the_oracle_judged_members(memorise_mlp: Setup) -> None:
    s = memorise_mlp
    # a forget set mixing members (the forget samples) and never-seen samples the oracle judges non-members
    x_ref, y_ref = s.reference
    outside = s.oracle.decide(s.model, x_ref, y_ref)
    x_mix = np.concatenate([s.forget[0], x_ref[~outside][:5]])
    y_mix = np.concatenate([s.forget[1], y_ref[~outside][:5]])
    result = forsaken.unlearn(
        s.model,
        forget=(x_mix, y_mix),
        reference=s.reference,
        retain=s.retain,
        config=forsaken.ForsakenConfig(),
        oracle=s.oracle,
    )
    before = s.oracle.decide(s.model, x_mix, y_mix)
    after = s.oracle.decide(result.model, x_mix, y_mix)
    assert result.stopped_because == "target-fr"
    assert not after[~before].any()  # the non-members stay non-members (FR is a net count)
    assert after[before].mean() <= 0.1


# ----------------------------------------------------------------------------- the oracle's margin
def test_escalation_deepens_the_nonmember_pool_and_focus_follows_the_decisions(memorise_mlp: Setup) -> None:
    """target="fr": each escalation re-matches the moving samples to reference vectors scoring further
    below the threshold (at e = 1, the lowest-scoring 10 % of the judged non-members beyond the margin);
    after an accepted step, forget samples judged non-members weigh ``focus`` in the forget term."""
    from fedforget.forsaken.inputs import as_pair as pair
    from fedforget.forsaken.loop import _Run

    s = memorise_mlp
    config = forsaken.ForsakenConfig(max_steps=1)
    run = _Run(
        s.model,
        forget=pair("f", s.forget),
        reference=pair("r", s.reference),
        retain=pair("k", s.retain),
        config=config,
        oracle=s.oracle,
        num_classes=30,
        accuracy_baseline=None,
    )
    objective = run.objective
    assert objective.targets.deepens
    move = objective.targets.moving
    scores = np.asarray(s.oracle.scores(s.model, *run.sets.reference_fit_np), dtype=np.float64)
    threshold = float(s.oracle.threshold)
    below = np.sort(scores[scores < threshold])
    probs = objective.reference_probs

    def worst_target_score() -> float:
        # every moving target is a (possibly class-swapped) reference vector: find it by its sorted entries
        rows = []
        for t in objective.targets.current[move]:
            match = torch.isclose(probs.sort(dim=1).values, t.sort().values, atol=1e-6).all(dim=1)
            rows.append(float(scores[int(torch.nonzero(match)[0, 0])]))
        return max(rows)

    start = worst_target_score()
    while objective.level < 1.0:
        objective.escalate()
    deepest = worst_target_score()
    assert deepest < start < threshold
    m = config.nonmember_margin + (1 - config.nonmember_margin) * 0.9
    assert deepest <= np.quantile(below, 1 - m) + 1e-12
    objective.reset_level()
    assert objective.targets.current is objective.targets.base
    # focus: the weights follow the last decisions
    result = run.run()
    assert result.steps == 1  # max_steps=1, and memorise's first step is accepted
    expected = np.where(run.measure.last_member, 1.0, config.focus)
    assert objective.focus is not None and np.allclose(objective.focus.numpy(), expected)
    assert (~run.measure.last_member).any()  # some sample is judged a non-member: weights differ


def test_margin_function_reproduces_the_decisions_of_a_shokri_and_a_loss_oracle(memorise_mlp: Setup) -> None:
    from fedforget.mia import fit_oracle

    s = memorise_mlp
    data = load_dataset("memorise")
    aux = np.random.default_rng(1).permutation(data.num_train)[:600]
    info = data.info

    def factory() -> nn.Module:
        return build_model("mlp", info)

    shokri = fit_oracle(
        "shokri", factory, data.x_train[aux], data.y_train[aux], num_shadows=2, epochs=5, batch_size=32
    )
    x, y = s.test[0][:400], s.test[1][:400]
    logits = s.model(torch.as_tensor(x)).detach()
    for oracle in (shokri, forsaken.LossThresholdOracle.fit(s.model, s.retain, s.reference)):
        margin = surrogate.margin_function(oracle, s.model)
        assert margin is not None
        decided = oracle.decide(s.model, x, y)
        assert 0 < decided.mean() < 1
        m = margin(logits, torch.as_tensor(y)).numpy()
        assert np.array_equal(m >= 0, decided), type(oracle).__name__
    assert surrogate.margin_function(s.oracle, s.model) is None  # an unknown oracle: no margin


def test_objective_hinge_needs_an_oracle_with_a_margin(memorise_mlp: Setup) -> None:
    s = memorise_mlp
    with pytest.raises(ValueError, match="objective='hinge' needs an oracle"):
        forsaken.unlearn(
            s.model,
            forget=s.forget,
            reference=s.reference,
            retain=s.retain,
            config=forsaken.ForsakenConfig(objective="hinge"),
            oracle=s.oracle,
        )
    proxy = forsaken.LossThresholdOracle.fit(s.model, s.retain, s.reference)
    result = forsaken.unlearn(
        s.model,
        forget=s.forget,
        reference=s.reference,
        retain=s.retain,
        config=forsaken.ForsakenConfig(objective="hinge", max_steps=40),
        oracle=proxy,
    )
    assert result.history[-1]["member_fraction"] < result.history[0]["member_fraction"]


# ------------------------------------------------------------------------- delegation to the metrics
def test_the_oracle_helpers_delegate_to_the_project_metrics() -> None:
    from fedforget import metrics
    from fedforget.mia import strength

    rng = np.random.default_rng(3)
    pos, neg = rng.normal(1, 1, 40), rng.normal(0, 1, 60)
    assert forsaken.auc(pos, neg) == metrics.attack_auc(pos, neg)
    assert np.isnan(forsaken.auc(pos[:0], neg))
    labels = np.r_[np.ones(40, bool), np.zeros(60, bool)]
    assert youden_threshold(pos, neg) == strength.youden_threshold(np.r_[pos, neg], labels)
    before, after = rng.random(30) < 0.7, rng.random(30) < 0.3
    expected = metrics.forgetting_rate_from_arrays(np.arange(30), before, after).fr
    assert forsaken.forgetting_rate(before, after) == expected
    assert np.isnan(forsaken.forgetting_rate(np.zeros(4, bool), np.zeros(4, bool)))
    with pytest.raises(ValueError, match="4 decisions before but 3 after"):
        forsaken.forgetting_rate(np.zeros(4, bool), np.zeros(3, bool))


# -------------------------------------------------------------------------------- the oracle recipe
def test_fit_oracle_for_builds_the_servers_oracle_from_the_run_config() -> None:
    from fedforget import data as data_registry
    from fedforget.client_data import split_for
    from fedforget.config import RunConfig
    from fedforget.mia import fit_oracle
    from fedforget.mia.recipe import fit_oracle_for, oracle_model_factory

    config = RunConfig(
        dataset="digits", model="mlp", num_clients=3, num_rounds=1, local_epochs=2, num_shadows=2
    )
    dataset, split = data_registry.load(config), split_for(config)
    oracle = fit_oracle_for(config, dataset, split)
    aux = split.aux_ids
    direct = fit_oracle(
        config.oracle,
        oracle_model_factory(config, dataset),
        dataset.x_train[aux],
        dataset.y_train[aux],
        num_shadows=2,
        epochs=config.effective_shadow_epochs,
        learning_rate=config.learning_rate,
        batch_size=config.batch_size,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
        seed=config.seed,
    )
    assert oracle.threshold == direct.threshold
    model = build_model("mlp", dataset.info, seed=0)
    x, y = dataset.x_test[:50], dataset.y_test[:50]
    assert np.array_equal(oracle.scores(model, x, y), direct.scores(model, x, y))
    with pytest.raises(ValueError, match="resolved model name"):
        fit_oracle_for(config.replace(model="auto"), dataset, split)
    no_aux = config.replace(aux_fraction=0.0)
    with pytest.raises(ValueError, match="aux-fraction is 0"):
        fit_oracle_for(no_aux, dataset, split_for(no_aux))


def test_the_centralized_experiment_driver_lives_in_simulations() -> None:
    """simulations/forsaken_experiment.py (moved out of the library): a tiny run on memorise."""
    from simulations import forsaken_experiment

    out = forsaken_experiment.run("memorise", "mlp", members=200, reference=60, epochs=2, retrain=False)
    assert out["num_forget"] == 10 and out["stopped_because"] in ("target-fr", "stalled", "max-steps")
    assert 0.0 <= out["acc_after"] <= 1.0 and "retrain_acc" not in out
