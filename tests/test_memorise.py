"""The synthetic ``memorise`` dataset (fedforget.data.synthetic) and the suite's rule for tests that need the
offline dataset files (tests/conftest.py): a fresh clone without ../shared passes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedforget import data
from fedforget.data import synthetic
from fedforget.data.preprocess import stratified_split
from fedforget.forsaken.oracle import per_sample_loss
from fedforget.metrics import attack_auc
from fedforget.models import build_model
from fedforget.training import evaluate, train
from tests.conftest import missing_shared_data, requires_shared_data, shared_data_root


def test_memorise_is_the_documented_generation_in_a_stable_order() -> None:
    # the module docstring's equations, written out again here
    rng = np.random.RandomState(20240515)
    n, d, k = 2000, 128, 30
    true_class = rng.randint(0, k, n)
    x = 0.4 * rng.normal(size=(k, d))[true_class] + rng.normal(size=(n, d))
    y = np.where(rng.random_sample(n) < 0.2, rng.randint(0, k, n), true_class)
    train_ids, test_ids = stratified_split(y)
    mean, std = x[train_ids].mean(axis=0), x[train_ids].std(axis=0)
    ds = data.load_dataset("Memorize")  # the alias, any case
    assert ds.info == data.info("memorise") == synthetic.MEMORISE_INFO
    np.testing.assert_array_equal(ds.y_train, y[train_ids])
    np.testing.assert_array_equal(ds.y_test, y[test_ids])
    np.testing.assert_allclose(ds.x_train, (x[train_ids] - mean) / std, rtol=0, atol=1e-5)
    np.testing.assert_allclose(ds.x_test, (x[test_ids] - mean) / std, rtol=0, atol=1e-5)
    assert (y != true_class).mean() == pytest.approx(0.2 * (1 - 1 / k), abs=0.03)  # the label noise
    again = synthetic.load_memorise()
    assert np.array_equal(again.x_train, ds.x_train) and np.array_equal(again.y_test, ds.y_test)


def test_a_small_mlp_can_only_memorise_it() -> None:
    """Train on 300 rows: all of them right, never-seen rows mostly wrong (but above chance: a weak
    signal), and a loss threshold tells the two apart. Measured: train 1.00, test 0.43, AUC 0.99."""
    ds = data.load_dataset("memorise")
    model = build_model("mlp", ds.info, seed=0)
    members = np.arange(300)
    x, y = ds.x_train[members], ds.y_train[members]
    train(model, x, y, epochs=30, learning_rate=0.05, batch_size=32, momentum=0.9, seed=0)
    train_acc, test_acc = evaluate(model, x, y).accuracy, evaluate(model, ds.x_test, ds.y_test).accuracy
    assert train_acc == 1.0
    assert 3 / ds.num_classes < test_acc < 0.6, test_acc
    member_scores = -per_sample_loss(model, x, y)
    nonmember_scores = -per_sample_loss(model, ds.x_test, ds.y_test)
    assert attack_auc(member_scores, nonmember_scores) > 0.9


def test_tests_needing_the_dataset_files_skip_with_the_reason(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FEDFORGET_DATA", str(tmp_path / "nowhere"))
    reason = missing_shared_data("location")
    assert reason is not None and "nowhere: does not exist" in reason and "location" in reason
    with pytest.raises(pytest.skip.Exception, match="offline dataset files absent"):
        shared_data_root("location")
    marker = requires_shared_data("location")
    assert marker.args == (True,) and marker.kwargs["reason"] == reason
    (tmp_path / "location").mkdir()
    monkeypatch.setenv("FEDFORGET_DATA", str(tmp_path))
    assert missing_shared_data("location") is None and shared_data_root("location") == tmp_path.resolve()
    assert requires_shared_data("location").args == (False,)
    assert "lacks the dataset sub-folder 'letter'" in (missing_shared_data("location", "letter") or "")
