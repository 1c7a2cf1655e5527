"""Tests for local training and evaluation (fedforget.training)."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from torch import nn

from fedforget.data import Dataset, load_dataset
from fedforget.models import build_model, criterion_for
from fedforget.training import evaluate, predict_proba, train


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """These models are tiny: a second intra-op thread only adds contention on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits")


def _params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------------ training
def test_mlp_learns_digits(digits: Dataset) -> None:
    model = build_model("mlp", digits.info, seed=0)
    before = evaluate(model, digits.x_test, digits.y_test)
    result = train(model, digits.x_train, digits.y_train, epochs=4, batch_size=64, learning_rate=0.1, seed=0)
    after = evaluate(model, digits.x_test, digits.y_test)
    # Measured: about 0.96 test accuracy (0.955-0.961 over seeds 0-2); untrained ~0.1.
    assert before.accuracy < 0.3
    assert after.accuracy > 0.92, after
    assert after.loss < before.loss / 4
    assert result.num_examples == len(digits.y_train)
    assert math.isfinite(result.loss) and 0 < result.loss < 0.35
    assert result.seconds > 0
    assert after.num_examples == len(digits.y_test)


def test_training_is_deterministic_in_the_seed_only(digits: Dataset) -> None:
    x, y = digits.x_train[:400], digits.y_train[:400]

    def run(train_seed: int, global_seed: int) -> tuple[dict[str, torch.Tensor], float]:
        torch.manual_seed(global_seed)  # train must not depend on the global RNG
        model = build_model("mlp", digits.info, seed=3)
        result = train(model, x, y, epochs=2, batch_size=16, seed=train_seed)
        return _params(model), result.loss

    a, loss_a = run(7, global_seed=1)
    b, loss_b = run(7, global_seed=2)
    c, _ = run(8, global_seed=1)
    assert _same(a, b)
    assert loss_a == loss_b
    assert not _same(a, c)  # the seed drives the batch order
    assert not _same(a, _params(build_model("mlp", digits.info, seed=3)))  # it did train


def test_train_does_not_modify_its_inputs(digits: Dataset) -> None:
    x = np.array(digits.x_train[:64])
    y = np.array(digits.y_train[:64])
    x0, y0 = x.copy(), y.copy()
    train(build_model("logreg", digits.info, seed=0), x, y, epochs=1)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(y, y0)
    # read-only (cached) arrays are fine too
    assert not digits.x_train.flags.writeable
    train(build_model("logreg", digits.info, seed=0), digits.x_train[:64], digits.y_train[:64])


def test_svm_is_trained_with_the_hinge_loss(digits: Dataset) -> None:
    x, y = digits.x_train[:256], digits.y_train[:256]
    model = build_model("svm", digits.info, seed=1)
    assert isinstance(criterion_for(model), nn.MultiMarginLoss)
    assert isinstance(criterion_for(build_model("mlp", digits.info, seed=1)), nn.CrossEntropyLoss)

    # One full batch: the reported loss is the loss of the initial weights.
    start = copy.deepcopy(model)
    with torch.no_grad():
        logits = start(torch.from_numpy(np.array(x)))
    target = torch.from_numpy(np.array(y))
    hinge = float(nn.MultiMarginLoss()(logits, target))
    cross_entropy = float(nn.CrossEntropyLoss()(logits, target))
    assert abs(hinge - cross_entropy) > 0.1
    result = train(model, x, y, epochs=1, batch_size=len(x), learning_rate=0.01, seed=0)
    assert result.loss == pytest.approx(hinge, rel=1e-5)
    assert evaluate(start, x, y).loss == pytest.approx(hinge, rel=1e-5)


def test_svm_learns_digits(digits: Dataset) -> None:
    model = build_model("svm", digits.info, seed=0)
    train(model, digits.x_train, digits.y_train, epochs=3, batch_size=32, learning_rate=0.05, seed=0)
    # Measured: about 0.93 (0.925-0.936 over seeds 0-2).
    assert evaluate(model, digits.x_test, digits.y_test).accuracy > 0.9


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"x": np.zeros((0, 64), np.float32), "y": np.zeros(0, np.int64)}, ValueError, "empty"),
        ({"x": np.zeros((5, 64), np.float32), "y": np.zeros(4, np.int64)}, ValueError, "5 samples but 4"),
        ({"epochs": 0}, ValueError, "epochs"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"learning_rate": 0.0}, ValueError, "learning_rate"),
        ({"learning_rate": -0.1}, ValueError, "learning_rate"),
    ],
    ids=["empty", "mismatched", "epochs", "batch", "lr0", "lr-neg"],
)
def test_train_rejects_bad_input(digits: Dataset, kwargs: dict, error: type[Exception], match: str) -> None:
    args = {"x": digits.x_train[:64], "y": digits.y_train[:64], **kwargs}
    model = build_model("mlp", digits.info, seed=0)
    with pytest.raises(error, match=match):
        train(model, args.pop("x"), args.pop("y"), **args)


def test_train_reports_divergence(digits: Dataset) -> None:
    # Inputs of 1e30 overflow the first SGD steps: the loss becomes inf/nan.
    model = build_model("mlp", digits.info, seed=0)
    x = np.array(digits.x_train[:64]) * np.float32(1e30)
    with pytest.raises(FloatingPointError, match="diverged"):
        train(model, x, digits.y_train[:64], epochs=2, seed=0)


# ------------------------------------------------------------------------------------ evaluation
def test_evaluate_matches_a_direct_computation(digits: Dataset) -> None:
    model = build_model("mlp", digits.info, seed=2)
    train(model, digits.x_train[:300], digits.y_train[:300], epochs=1, seed=0)
    x, y = digits.x_test, digits.y_test
    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(np.array(x)))
    target = torch.from_numpy(np.array(y))
    expected_loss = float(nn.CrossEntropyLoss()(logits, target))
    expected_acc = int((logits.argmax(1) == target).sum()) / len(y)
    for batch_size in (1024, 7, 1):  # mini-batch averages are weighted by batch size
        result = evaluate(model, x, y, batch_size=batch_size)
        assert result.num_examples == len(y)
        assert result.loss == pytest.approx(expected_loss, rel=1e-5)
        assert result.accuracy == pytest.approx(expected_acc, abs=1e-12)


def test_evaluate_on_an_empty_set_gives_nan(digits: Dataset) -> None:
    model = build_model("mlp", digits.info, seed=0)
    result = evaluate(model, np.zeros((0, 64), np.float32), np.zeros(0, np.int64))
    assert math.isnan(result.loss) and math.isnan(result.accuracy)
    assert result.num_examples == 0


def test_evaluate_rejects_mismatched_lengths(digits: Dataset) -> None:
    model = build_model("mlp", digits.info, seed=0)
    with pytest.raises(ValueError, match="10 samples but 9 labels"):
        evaluate(model, digits.x_test[:10], digits.y_test[:9])


def test_predict_proba_gives_softmax_rows(digits: Dataset) -> None:
    model = build_model("mlp", digits.info, seed=5)
    train(model, digits.x_train[:300], digits.y_train[:300], epochs=1, seed=0)
    x = digits.x_test[:100]
    proba = predict_proba(model, x)
    assert proba.shape == (100, 10)
    assert proba.dtype == np.float32
    assert np.all(proba >= 0) and np.all(proba <= 1)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    with torch.no_grad():
        logits = model(torch.from_numpy(np.array(x)))
    np.testing.assert_allclose(proba, torch.softmax(logits, 1).numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(proba.argmax(1), logits.argmax(1).numpy())
    assert not np.allclose(proba, 0.1)  # not a uniform (untrained-looking) output
    np.testing.assert_allclose(predict_proba(model, x, batch_size=9), proba, rtol=1e-5, atol=1e-7)
    assert len(predict_proba(model, x[:0])) == 0


def test_evaluation_leaves_the_model_in_eval_mode_and_unchanged(digits: Dataset) -> None:
    model = build_model("mlp", digits.info, seed=0)
    before = _params(model)
    model.train()
    evaluate(model, digits.x_test, digits.y_test)
    predict_proba(model, digits.x_test)
    assert not model.training
    assert _same(before, _params(model))
