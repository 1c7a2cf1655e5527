"""Tests for the run split (fedforget.splits) and one client's view of it (fedforget.client_data)."""

from __future__ import annotations

import functools
import json
import warnings

import numpy as np
import pytest

from fedforget import data
from fedforget.client_data import ClientData
from fedforget.config import RunConfig
from fedforget.splits import ClientSplit, Split, SplitError, check_split, make_split

NUM_TEST = 50
PARTITIONINGS = ("iid", "dirichlet", "pathological")
SPLIT_META_KEYS = (
    "dataset",
    "seed",
    "partitioning",
    "alpha",
    "classes-per-client",
    "aux-fraction",
    "holdout-fraction",
    "num-train-total",
    "num-pool",
    "unassigned-ids",
)


@functools.cache
def _labels(source: str) -> np.ndarray:
    if source == "synthetic":  # 2,000 samples, 10 classes, mildly unbalanced
        rng = np.random.default_rng(1234)
        return rng.choice(10, size=2000, p=np.linspace(1, 2, 10) / np.linspace(1, 2, 10).sum())
    return np.asarray(data.load_dataset("digits").y_train)


def _config(**changes: object) -> RunConfig:
    base = {"num-clients": 10, "classes-per-client": 2, "aux-fraction": 0.15, "holdout-fraction": 0.3}
    return RunConfig.from_mapping({**base, **changes})


def _make(source: str, **changes: object) -> Split:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # flwr-datasets: unused classes
        return make_split(_labels(source), NUM_TEST, _config(**changes))


@functools.cache
def _cached(source: str, config: RunConfig) -> Split:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return make_split(_labels(source), NUM_TEST, config)


def _split(source: str, **changes: object) -> Split:
    """A split shared between tests (treat it as read-only)."""
    return _cached(source, _config(**changes))


def _parts(split: Split) -> list[np.ndarray]:
    return [split.aux_ids] + [a for c in split.clients for a in (c.train_ids, c.holdout_ids)]


def _assert_same(a: Split, b: Split) -> None:
    assert a.meta == b.meta
    assert len(a.clients) == len(b.clients)
    for x, y in zip(_parts(a) + [a.test_ids], _parts(b) + [b.test_ids], strict=True):
        assert x.dtype == y.dtype == np.int64
        np.testing.assert_array_equal(x, y)


def _entropy(labels: np.ndarray, num_classes: int = 10) -> float:
    p = np.bincount(labels, minlength=num_classes) / len(labels)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


SOURCES = ("synthetic", "digits")
CASES = [pytest.param(p, s, id=f"{p}-{s}") for p in PARTITIONINGS for s in SOURCES]


# ------------------------------------------------------------------------------------ invariants
@pytest.mark.parametrize(("partitioning", "source"), CASES)
def test_parts_are_disjoint_sorted_and_cover_the_pool(partitioning: str, source: str) -> None:
    y = _labels(source)
    split = _split(source, partitioning=partitioning)
    assert split.num_clients == 10
    parts = _parts(split)
    for part in parts:
        assert part.dtype == np.int64
        assert np.all(np.diff(part) > 0), "ids must be sorted and unique"
    every = np.concatenate(parts)
    assert len(np.unique(every)) == len(every), "parts overlap"
    check_split(split, len(y))
    # Complete: with 10 clients x 2 classes, first-deterministic assignment uses every class,
    # so every pool id (all train ids here) is the server's or exactly one client's.
    np.testing.assert_array_equal(np.sort(every), np.arange(len(y)))
    np.testing.assert_array_equal(split.test_ids, np.arange(NUM_TEST))
    for c in split.clients:
        assert len(c.train_ids) > 0
        np.testing.assert_array_equal(c.all_ids, np.sort(np.concatenate([c.train_ids, c.holdout_ids])))
    assert split.meta["num-pool"] == split.meta["num-train-total"] == len(y)
    assert split.meta["partitioning"] == partitioning


@pytest.mark.parametrize(("partitioning", "source"), CASES)
def test_aux_and_holdout_fractions_are_exact_up_to_rounding(partitioning: str, source: str) -> None:
    y = _labels(source)
    split = _split(source, partitioning=partitioning)
    assert abs(len(split.aux_ids) - 0.15 * len(y)) <= 0.5
    for c in split.clients:
        size = len(c.train_ids) + len(c.holdout_ids)
        if size >= 2:
            assert abs(len(c.holdout_ids) - 0.3 * size) <= 0.5, (len(c.holdout_ids), size)
        else:
            assert len(c.holdout_ids) == 0  # a client always keeps at least one training sample


def test_iid_clients_have_equal_sizes_and_all_classes() -> None:
    y = _labels("synthetic")
    split = _split("synthetic", partitioning="iid")
    sizes = [len(c.all_ids) for c in split.clients]
    assert max(sizes) - min(sizes) <= 1
    for c in split.clients:
        assert len(np.unique(y[c.all_ids])) == 10


@pytest.mark.parametrize(
    "changes",
    [
        {"partitioning": "iid"},
        {"partitioning": "dirichlet", "alpha": 0.3},
        {"partitioning": "pathological", "classes-per-client": 3},
    ],
    ids=lambda c: c["partitioning"],
)
def test_same_seed_same_split_and_different_seed_different_split(changes: dict[str, object]) -> None:
    first = _make("synthetic", seed=5, **changes)
    again = _make("synthetic", seed=5, **changes)
    other = _make("synthetic", seed=6, **changes)
    _assert_same(first, again)
    assert not np.array_equal(first.aux_ids, other.aux_ids)
    differs = [
        not np.array_equal(a.train_ids, b.train_ids)
        for a, b in zip(first.clients, other.clients, strict=True)
    ]
    assert all(differs)


def test_settings_that_do_not_affect_the_split_leave_it_unchanged() -> None:
    a = _make("synthetic", partitioning="dirichlet", seed=2)
    b = _make(
        "synthetic",
        partitioning="dirichlet",
        seed=2,
        **{"num-rounds": 9, "learning-rate": 0.5, "run-id": "x"},
    )
    _assert_same(a, b)


def test_dirichlet_skew_grows_as_alpha_shrinks() -> None:
    y = _labels("synthetic")

    def mean_entropy(split: Split) -> float:
        return float(np.mean([_entropy(y[c.all_ids]) for c in split.clients]))

    iid = mean_entropy(_split("synthetic", partitioning="iid"))
    wide = mean_entropy(_split("synthetic", partitioning="dirichlet", alpha=100.0))
    skewed = mean_entropy(_split("synthetic", partitioning="dirichlet", alpha=0.1))
    assert iid > 0.97 * np.log(10)  # iid clients see nearly the global label mix
    assert abs(wide - iid) < 0.1  # large alpha approaches iid
    assert skewed < iid - 0.6, (skewed, iid)


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("classes_per_client", [1, 2, 3])
def test_pathological_clients_see_at_most_classes_per_client_classes(
    source: str, classes_per_client: int
) -> None:
    y = _labels(source)
    split = _split(source, partitioning="pathological", **{"classes-per-client": classes_per_client})
    seen = [set(np.unique(y[c.all_ids]).tolist()) for c in split.clients]
    assert all(1 <= len(s) <= classes_per_client for s in seen), seen
    assert any(len(s) == classes_per_client for s in seen)
    assert split.meta["classes-per-client"] == classes_per_client


def test_pathological_leaves_out_only_whole_classes_no_client_holds() -> None:
    # 3 clients x 2 classes cannot cover 10 classes: the partitioner drops the unused classes.
    y = _labels("synthetic")
    split = _make("synthetic", partitioning="pathological", **{"num-clients": 3, "aux-fraction": 0.1})
    check_split(split, len(y))
    held = set(np.concatenate([c.all_ids for c in split.clients]).tolist())
    client_classes = set(y[sorted(held)].tolist())
    assert len(client_classes) <= 6
    missing = np.setdiff1d(np.arange(len(y)), np.concatenate(_parts(split)))
    assert len(missing) > 0
    assert set(y[missing].tolist()).isdisjoint(client_classes)
    # Every pool sample of a class some client holds went to the server or to a client.
    rest = np.setdiff1d(np.arange(len(y)), split.aux_ids)
    np.testing.assert_array_equal(np.sort(list(held)), rest[np.isin(y[rest], list(client_classes))])


@pytest.mark.parametrize("partitioning", PARTITIONINGS)
def test_max_train_samples_subsamples_the_pool(partitioning: str) -> None:
    y = _labels("synthetic")
    split = _make("synthetic", partitioning=partitioning, **{"max-train-samples": 600, "seed": 3})
    every = np.concatenate(_parts(split))
    assert split.meta["num-pool"] == 600
    assert split.meta["num-train-total"] == len(y)
    assert len(np.unique(every)) == len(every) <= 600
    assert every.min() >= 0 and every.max() < len(y)
    assert abs(len(split.aux_ids) - 0.15 * 600) <= 0.5
    if partitioning != "pathological":
        assert len(every) == 600
    # the subsample is spread over the whole train set, not its first 600 ids
    assert every.max() > 1200
    # a different seed draws a different subsample
    other = _make("synthetic", partitioning=partitioning, **{"max-train-samples": 600, "seed": 4})
    assert not np.array_equal(np.sort(every), np.sort(np.concatenate(_parts(other))))


def test_max_train_samples_at_or_above_the_train_size_keeps_everything() -> None:
    y = _labels("synthetic")
    split = _make("synthetic", **{"max-train-samples": len(y) + 1})
    assert split.meta["num-pool"] == len(y)
    np.testing.assert_array_equal(np.sort(np.concatenate(_parts(split))), np.arange(len(y)))


def test_no_aux_no_holdout() -> None:
    split = _make("synthetic", **{"aux-fraction": 0, "holdout-fraction": 0, "num-clients": 4})
    assert len(split.aux_ids) == 0
    assert all(len(c.holdout_ids) == 0 for c in split.clients)
    assert sum(len(c.train_ids) for c in split.clients) == len(_labels("synthetic"))


@pytest.mark.parametrize("partitioning", PARTITIONINGS)
def test_json_round_trip_is_exact(partitioning: str) -> None:
    split = _split("synthetic", partitioning=partitioning)
    doc = json.loads(split.dumps())
    # The keys documented in docs/run-record.md.
    assert set(doc) == {*SPLIT_META_KEYS, "aux-ids", "test-ids", "clients"}
    assert doc["partitioning"] == partitioning
    assert doc["aux-fraction"] == 0.15 and doc["holdout-fraction"] == 0.3
    assert (doc["alpha"] is None) == (partitioning != "dirichlet")
    assert (doc["classes-per-client"] is None) == (partitioning != "pathological")
    assert [set(c) for c in doc["clients"]] == [{"partition-id", "train-ids", "holdout-ids"}] * 10
    assert [c["partition-id"] for c in doc["clients"]] == list(range(split.num_clients))
    assert doc["aux-ids"] == split.aux_ids.tolist()
    assert doc["clients"][4]["holdout-ids"] == split.clients[4].holdout_ids.tolist()
    back = Split.from_json(doc)
    _assert_same(split, back)
    assert back.to_json() == split.to_json()


# ------------------------------------------------------------------------------------ errors
def test_too_many_clients_is_a_split_error() -> None:
    y = np.arange(40) % 4
    with pytest.raises(SplitError, match="50 clients"):
        make_split(y, 0, _config(**{"num-clients": 50, "aux-fraction": 0.2}))
    # 34 = 40 - round(0.15 * 40) samples remain: 34 clients is fine, 35 is not
    assert make_split(y, 0, _config(**{"num-clients": 34, "holdout-fraction": 0})).num_clients == 34
    with pytest.raises(SplitError, match="only 34 samples remain for 35 clients"):
        make_split(y, 0, _config(**{"num-clients": 35}))


def test_classes_per_client_above_the_number_of_classes_is_a_split_error() -> None:
    y = np.arange(300) % 3
    config = _config(partitioning="pathological", **{"classes-per-client": 4, "num-clients": 3})
    with pytest.raises(SplitError, match="classes-per-client=4 .* only 3 classes"):
        make_split(y, 0, config)


def test_partitioner_refusals_are_split_errors() -> None:
    # class 2 has one sample but 'first-deterministic' assignment gives it to several clients
    y = np.array([0] * 50 + [1] * 50 + [2])
    config = _config(partitioning="pathological", **{"num-clients": 20, "aux-fraction": 0})
    with pytest.raises(SplitError, match="pathological"):
        make_split(y, 0, config)


def test_client_without_samples_is_a_split_error() -> None:
    y = np.arange(30) % 3
    config = _config(partitioning="dirichlet", alpha=0.01, **{"num-clients": 20, "aux-fraction": 0})
    with pytest.raises(SplitError, match="received no samples"):
        make_split(y, 0, config)


def test_empty_training_set_is_a_split_error() -> None:
    with pytest.raises(SplitError, match="no training samples"):
        make_split(np.array([], dtype=np.int64), 10, _config())


def test_client_lookup_outside_the_range_is_a_split_error() -> None:
    split = _split("synthetic", partitioning="iid")
    assert split.client(9) is split.clients[9]
    for bad in (-1, 10):
        with pytest.raises(SplitError, match="partition-id"):
            split.client(bad)


def test_check_split_catches_overlap_and_out_of_range_ids() -> None:
    y = _labels("synthetic")
    good = _split("synthetic", partitioning="iid")
    check_split(good, len(y))

    # Client 3 also "holds" one of the server's auxiliary ids.
    leaked = good.aux_ids[0]
    c3 = good.clients[3]
    bad = ClientSplit(np.sort(np.append(c3.train_ids, leaked)), c3.holdout_ids)
    overlapping = Split(good.aux_ids, good.clients[:3] + (bad,) + good.clients[4:], good.test_ids, good.meta)
    with pytest.raises(SplitError, match="overlap"):
        check_split(overlapping, len(y))

    # A client's holdout id also in its own train ids.
    c0 = good.clients[0]
    self_overlap = ClientSplit(c0.train_ids, np.sort(np.append(c0.holdout_ids, c0.train_ids[0])))
    with pytest.raises(SplitError, match="overlap"):
        check_split(Split(good.aux_ids, (self_overlap,) + good.clients[1:], good.test_ids, {}), len(y))

    with pytest.raises(SplitError, match="outside"):
        check_split(good, len(y) - 1)  # the largest id no longer exists
    negative = Split(np.append(good.aux_ids, -1), good.clients, good.test_ids, {})
    with pytest.raises(SplitError, match="outside"):
        check_split(negative, len(y))


# ------------------------------------------------------------------------------------ ClientData
def test_client_data_matches_the_split_and_the_dataset() -> None:
    config = _config(dataset="digits", partitioning="dirichlet", **{"num-clients": 4})
    dataset = data.load_dataset("digits")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        split = make_split(dataset.y_train, len(dataset.y_test), config)
    for pid in range(4):
        client = ClientData.for_partition(config, pid)
        assert client.partition_id == pid
        np.testing.assert_array_equal(client.train_ids, split.clients[pid].train_ids)
        np.testing.assert_array_equal(client.holdout_ids, split.clients[pid].holdout_ids)
        np.testing.assert_array_equal(client.x_train, dataset.x_train[client.train_ids])
        np.testing.assert_array_equal(client.y_train, dataset.y_train[client.train_ids])
        np.testing.assert_array_equal(client.x_holdout, dataset.x_train[client.holdout_ids])
        np.testing.assert_array_equal(client.y_holdout, dataset.y_train[client.holdout_ids])
        assert len(client.x_train) == len(client.y_train) > 0
    # Settings that do not change the split give the same client data.
    other = ClientData.for_partition(config.replace(num_rounds=3, local_epochs=2, run_id="r"), 1)
    np.testing.assert_array_equal(other.train_ids, split.clients[1].train_ids)
    for bad in (-1, 4):
        with pytest.raises(ValueError, match="partition-id"):
            ClientData.for_partition(config, bad)
