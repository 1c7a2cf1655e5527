"""A one-sample unlearning mask reveals the sample; the ``min-forget-samples`` floor pads it with decoys.

Uses scikit-learn's bundled digits and the device's real ``compute_delta`` (no Flower processes).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clients.context import ClientSetup
from clients.methods import decoys
from fedforget import data, models
from fedforget.device import Device
from simulations.mask_leakage import _global_model, _run_config, one_mask, reconstruct


@pytest.fixture(scope="module")
def trained() -> dict:
    return _global_model(_run_config("logreg", 1, 0), epochs=2)


def _attack(trained: dict, floor: int, ids: np.ndarray, tmp_path: Path) -> tuple[float, bool, int]:
    config = _run_config("logreg", floor, 0)
    mask, mixed = one_mask(config, trained, "gradient-ascent", ids, tmp_path / f"s{floor}.sqlite")
    names = [n for n, _ in models.build_model("logreg", data.load(config).info).named_parameters()]
    x_hat, y_hat = reconstruct(mask, names)
    _, x, y = Device.open(config, 0, tmp_path / "probe.sqlite").data.subset(ids)
    assert x_hat is not None
    return float(np.abs(x_hat - x[0]).max()), y_hat == int(y[0]), len(mixed)


def test_a_one_sample_mask_gives_the_sample_away_without_a_floor(trained: dict, tmp_path: Path) -> None:
    ids = Device.open(_run_config("logreg", 1, 0), 0, tmp_path / "p.sqlite").data.train_ids[[5]]
    error, label_hit, in_mask = _attack(trained, 1, ids, tmp_path)
    assert in_mask == 1
    assert error < 1e-3 and label_hit  # features (in standard deviations) and label, recovered


def test_the_floor_pads_a_one_sample_mask_and_the_reconstruction_fails(trained: dict, tmp_path: Path) -> None:
    ids = Device.open(_run_config("logreg", 1, 0), 0, tmp_path / "p.sqlite").data.train_ids[[5]]
    exact, _, _ = _attack(trained, 1, ids, tmp_path)
    padded, _, in_mask = _attack(trained, 8, ids, tmp_path)
    assert in_mask == 8
    assert padded > 0.1 > 1e3 * exact  # from ~1e-5 standard deviations to a tenth of one or more


def _setup(floor: int, tmp_path: Path) -> ClientSetup:
    config = _run_config("logreg", floor, 0)
    info = data.load(config).info
    device = Device.open(config, 0, tmp_path / f"d{floor}.sqlite")
    return ClientSetup(config, 0, device, models.build_model("logreg", info), 1, info)


def test_decoys_are_the_same_for_a_request_and_never_withdrawn_samples(tmp_path: Path) -> None:
    setup = _setup(8, tmp_path)
    first = decoys(setup, ["r1"], 1)
    assert len(first) == 7 and np.array_equal(first, decoys(setup, ["r1"], 1))  # every round alike
    assert not np.array_equal(first, decoys(setup, ["r2"], 1))
    assert decoys(setup, ["r1"], 8).size == 0 and decoys(setup, ["r1"], 20).size == 0
    assert decoys(_setup(1, tmp_path), ["r1"], 1).size == 0  # no floor, no decoys
    withdrawn = setup.device.data.train_ids[:-3]  # all but 3 training samples withdrawn
    setup.device.store.add("samples", withdrawn, owned_ids=setup.device.data.train_ids)
    left = decoys(setup, ["r3"], 1)
    assert len(left) == 3 and not np.isin(left, withdrawn).any()
