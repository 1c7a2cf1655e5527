"""Tests for the dataset layer (fedforget.data).

Real-data tests read the offline files (found the way the package finds them) and check the
package's output against values decoded here independently with gzip / tarfile / csv / Pillow.
They skip only when no dataset folder exists at all.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import pickle
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

import fedforget.data as data
from fedforget.config import RunConfig
from fedforget.data import DataError, Dataset, DatasetInfo, paths, tabular
from fedforget.data import images as images_mod
from fedforget.data.download import main as download_main
from tests.conftest import shared_data_root

# name -> (train, test, input_shape, num_classes, kind); official sizes, or the documented split rule
EXPECTED = {
    "mnist": (60000, 10000, (1, 28, 28), 10, "image"),
    "fashion-mnist": (60000, 10000, (1, 28, 28), 10, "image"),
    "cifar10": (50000, 10000, (3, 32, 32), 10, "image"),
    "adult": (32561, 16281, (108,), 2, "tabular"),
    "location": (4007, 1003, (446,), 30, "tabular"),
    "letter": (16000, 4000, (16,), 26, "tabular"),
    "digits": (1438, 359, (64,), 10, "tabular"),
    "breast-cancer": (456, 113, (30,), 2, "tabular"),
    "memorise": (1601, 399, (128,), 30, "tabular"),
}
STATS = {"mnist": ((0.1307,), (0.3081,)), "fashion-mnist": ((0.2860,), (0.3530,))}


@pytest.fixture(scope="module")
def root() -> Path:
    return shared_data_root()


def _needs(root: Path, sub: str) -> Path:
    if not (root / sub).exists():
        pytest.skip(f"{root / sub} is absent")
    return root / sub


def _raw_idx(path: Path, header: int) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        return np.frombuffer(fh.read(), dtype=np.uint8, offset=header)


def _idx_path(folder: Path, split: str, kind: str) -> Path:
    ndim = 3 if kind == "images" else 1
    (path,) = [
        p for p in folder.iterdir() if p.name in {f"{split}-{kind}{s}idx{ndim}-ubyte.gz" for s in "-."}
    ]
    return path


# ------------------------------------------------------------------------------------ registry basics
def test_available_and_static_info() -> None:
    assert data.available() == list(EXPECTED)
    for name, (_, _, shape, classes, kind) in EXPECTED.items():
        # static: a data-dir that does not exist is never looked at
        assert data.info(name, data_dir="/nonexistent/fedforget") == DatasetInfo(name, shape, classes, kind)
    assert data.info("FMNIST").name == "fashion-mnist"
    assert tabular.ADULT_WIDTH == len(tabular.adult_feature_names()) == 108


def test_md5sums(root: Path) -> None:
    lines = (root / "MD5SUMS").read_text().split("\n")
    entries = [line.split(maxsplit=1) for line in lines if line.strip()]
    assert len(entries) >= 14
    for digest, name in entries:
        path = root / name.strip()
        assert path.is_file(), path
        assert hashlib.md5(path.read_bytes()).hexdigest() == digest, path


@pytest.mark.parametrize("name", list(EXPECTED))
def test_shapes_and_info_match_loaded(root: Path, name: str) -> None:
    n_train, n_test, shape, classes, kind = EXPECTED[name]
    ds = data.load_dataset(name)
    assert isinstance(ds, Dataset)
    assert ds.info == data.info(name) == DatasetInfo(name, shape, classes, kind)
    assert ds.x_train.shape == (n_train, *shape) and ds.x_test.shape == (n_test, *shape)
    assert ds.x_train.dtype == ds.x_test.dtype == np.float32
    assert ds.y_train.dtype == ds.y_test.dtype == np.int64
    assert np.isfinite(ds.x_train).all() and np.isfinite(ds.x_test).all()
    assert set(np.unique(ds.y_train)) == set(range(classes))
    for array in (ds.x_train, ds.y_train, ds.x_test, ds.y_test):
        assert not array.flags.writeable
    with pytest.raises(ValueError):
        ds.x_train[0] = 0


# ------------------------------------------------------------------------------------------ images
@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_idx_datasets_match_raw_files(root: Path, name: str) -> None:
    folder = _needs(root, name)
    ds = data.load_dataset(name)
    mean, std = STATS[name]
    for split, x, y in (("train", ds.x_train, ds.y_train), ("t10k", ds.x_test, ds.y_test)):
        raw_x = _raw_idx(_idx_path(folder, split, "images"), 16).reshape(-1, 28, 28)
        raw_y = _raw_idx(_idx_path(folder, split, "labels"), 8)
        np.testing.assert_array_equal(y, raw_y)
        for i in (0, 1, 777, len(raw_y) - 1):
            expected = (raw_x[i].astype(np.float32) / 255 - mean[0]) / std[0]
            np.testing.assert_allclose(x[i, 0], expected, rtol=0, atol=1e-6)
    counts = np.bincount(_raw_idx(_idx_path(folder, "train", "labels"), 8))
    np.testing.assert_array_equal(np.bincount(ds.y_train), counts)
    if name == "mnist":
        assert counts[1] == 6742 and counts[5] == 5421  # the well-known MNIST train class sizes
    else:
        assert (counts == 6000).all()
    assert abs(float(ds.x_train.mean())) < 0.01 and abs(float(ds.x_train.std()) - 1) < 0.01


def test_cifar10_matches_jpeg_npz(root: Path) -> None:
    npz = _needs(root, "cifar10-jpeg") / "cifar10_jpeg_q75.npz"
    from PIL import Image

    ds = data.load_dataset("cifar10")
    mean = np.array(images_mod.CIFAR10_STATS[0], dtype=np.float32)[:, None, None]
    std = np.array(images_mod.CIFAR10_STATS[1], dtype=np.float32)[:, None, None]
    with np.load(npz) as raw:
        for split, x, y in (("train", ds.x_train, ds.y_train), ("test", ds.x_test, ds.y_test)):
            np.testing.assert_array_equal(y, raw[f"y_{split}"])
            assert (np.bincount(raw[f"y_{split}"]) == len(y) // 10).all()
            blob, offsets = raw[f"{split}_jpeg"], raw[f"{split}_offsets"]
            for i in (0, 4999, 31337 % len(y), len(y) - 1):
                pixels = np.asarray(Image.open(io.BytesIO(blob[offsets[i] : offsets[i + 1]].tobytes())))
                expected = (pixels.transpose(2, 0, 1).astype(np.float32) / 255 - mean) / std
                np.testing.assert_allclose(x[i], expected, rtol=0, atol=1e-5)
    per_channel = ds.x_train.transpose(1, 0, 2, 3).reshape(3, -1)
    assert np.abs(per_channel.mean(axis=1)).max() < 0.01
    assert np.abs(per_channel.std(axis=1) - 1).max() < 0.02  # JPEG smoothing: std ~1% low


# ----------------------------------------------------------------------------------------- tabular
def _adult_rows(path: Path, skip: int) -> list[list[str]]:
    lines = path.read_text().splitlines()[skip:]
    return [[f.strip() for f in line.split(",")] for line in lines if line.strip()]


def test_adult_matches_raw_files(root: Path) -> None:
    folder = _needs(root, "adult")
    ds = data.load_dataset("adult")
    train, test = _adult_rows(folder / "adult.data", 0), _adult_rows(folder / "adult.test", 1)
    assert (len(train), len(test)) == (32561, 16281)
    np.testing.assert_array_equal(ds.y_train, [r[-1] == ">50K" for r in train])
    np.testing.assert_array_equal(ds.y_test, [r[-1] == ">50K." for r in test])
    assert int(ds.y_train.sum()) == 7841 and int(ds.y_test.sum()) == 3846
    names = tabular.adult_feature_names()
    # every categorical column is one-hot; "?" is its own category
    categorical = np.array(["=" in n for n in names])
    assert (ds.x_train[:, categorical].sum(axis=1) == 8).all() and (
        ds.x_test[:, categorical].sum(axis=1) == 8
    ).all()
    question = names.index("workclass=?")
    assert int(ds.x_train[:, question].sum()) == sum(r[1] == "?" for r in train)
    # continuous columns standardised with train statistics
    for column, raw_index in (("age", 0), ("hours-per-week", 12)):
        raw = np.array([float(r[raw_index]) for r in train])
        j = names.index(column)
        for i in (0, 1, 32560):
            assert ds.x_train[i, j] == pytest.approx((raw[i] - raw.mean()) / raw.std(), abs=1e-5)
        assert ds.x_test[0, j] == pytest.approx(
            (float(test[0][raw_index]) - raw.mean()) / raw.std(), abs=1e-5
        )


def test_location_matches_raw_file(root: Path) -> None:
    folder = _needs(root, "location")
    with tarfile.open(folder / "dataset_location.tgz") as archive:
        (member,) = archive.getmembers()
        text = archive.extractfile(member).read().decode()
    rows = [line.split(",") for line in text.splitlines() if line.strip()]
    raw_y = np.array([int(r[0].strip('"')) - 1 for r in rows])
    raw_x = np.array([[float(v) for v in r[1:]] for r in rows], dtype=np.float32)
    assert raw_x.shape == (5010, 446)
    ds = data.load_dataset("location")
    counts = np.bincount(raw_y, minlength=30)
    np.testing.assert_array_equal(
        np.bincount(ds.y_train, minlength=30) + np.bincount(ds.y_test, minlength=30), counts
    )
    np.testing.assert_array_equal(np.bincount(ds.y_test, minlength=30), np.floor(0.2 * counts + 0.5))
    assert len(ds.y_test) == int(np.floor(0.2 * counts + 0.5).sum())
    # each split is an in-order subsequence of the file's rows (features and label)
    for x, y in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
        j = 0
        for i in range(len(y)):
            while not (raw_y[j] == y[i] and np.array_equal(raw_x[j], x[i])):
                j += 1
            j += 1
    assert set(np.unique(ds.x_train)) == {0.0, 1.0}


def test_letter_matches_raw_file(root: Path) -> None:
    folder = _needs(root, "letter")
    with gzip.open(folder / "letter-recognition.csv.gz", "rt") as fh:
        rows = list(csv.reader(fh))[1:]
    raw_y = np.array([ord(r[0]) - ord("A") for r in rows])
    raw_x = np.array([r[1:] for r in rows], dtype=np.float64)
    ds = data.load_dataset("letter")
    np.testing.assert_array_equal(ds.y_train, raw_y[:16000])
    np.testing.assert_array_equal(ds.y_test, raw_y[16000:])
    mean, std = raw_x[:16000].mean(axis=0), raw_x[:16000].std(axis=0)
    for i in (0, 15999):
        np.testing.assert_allclose(ds.x_train[i], (raw_x[i] - mean) / std, atol=1e-5)
    np.testing.assert_allclose(ds.x_test[-1], (raw_x[-1] - mean) / std, atol=1e-5)
    assert np.abs(ds.x_train.mean(axis=0)).max() < 1e-4 and np.abs(ds.x_train.std(axis=0) - 1).max() < 1e-4


def test_bundled_datasets() -> None:
    from sklearn.datasets import load_breast_cancer, load_digits

    digits = data.load_dataset("digits")
    raw = load_digits()
    assert len(digits.y_train) + len(digits.y_test) == len(raw.target) == 1797
    assert digits.x_train.min() >= 0 and digits.x_train.max() <= 1
    np.testing.assert_array_equal(
        np.bincount(digits.y_test), np.floor(0.2 * np.bincount(raw.target) + 0.5).astype(int)
    )
    cancer = data.load_dataset("breast-cancer")
    assert len(cancer.y_train) + len(cancer.y_test) == len(load_breast_cancer().target) == 569
    assert np.abs(cancer.x_train.mean(axis=0)).max() < 1e-4


# -------------------------------------------------------------------------------- caching & stability
def test_global_ids_are_stable_across_loads(root: Path) -> None:
    _needs(root, "mnist")
    first = data.load_dataset("mnist")
    assert data.load_dataset("mnist", str(root)) is first  # in-process cache keyed by resolved root
    data.clear_cache()
    second = data.load_dataset("mnist")
    assert second is not first
    for a, b in (
        (first.x_train, second.x_train),
        (first.y_train, second.y_train),
        (first.x_test, second.x_test),
    ):
        np.testing.assert_array_equal(a, b)
    loc = data.load_dataset("location")
    data.clear_cache()
    np.testing.assert_array_equal(loc.x_train, data.load_dataset("location").x_train)


def test_load_from_run_config(root: Path) -> None:
    assert data.load(RunConfig()).name == "digits"
    assert data.load(RunConfig(dataset="Letter", data_dir=str(root))).num_train == 16000


# ------------------------------------------------------------------------------------------- errors
def test_unknown_name_suggests() -> None:
    with pytest.raises(DataError, match="Did you mean 'mnist'") as err:
        data.load_dataset("mnsit")
    assert "fashion-mnist" in str(err.value) and "csv:PATH" in str(err.value)
    with pytest.raises(DataError, match="Did you mean 'breast-cancer'"):
        data.info("breast_cancr")


def test_missing_root_names_every_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(paths.ENV_VAR, raising=False)
    monkeypatch.setattr(paths, "PROJECT_ROOT", tmp_path / "proj")
    work = tmp_path / "a" / "work"
    work.mkdir(parents=True)
    (tmp_path / "a" / "shared" / "datasets").mkdir(parents=True)  # exists, but lacks mnist/
    monkeypatch.chdir(work)
    with pytest.raises(DataError) as err:
        data.load_dataset("mnist")
    message = str(err.value)
    assert "data-dir: not set" in message and f"{paths.ENV_VAR}: not set" in message
    assert f"{tmp_path / 'shared' / 'datasets'}: does not exist" in message
    assert (
        f"{tmp_path / 'a' / 'shared' / 'datasets'}: exists but lacks the dataset sub-folder 'mnist'"
        in message
    )
    assert f"{work / 'shared' / 'datasets'}: does not exist" in message
    assert "python -m fedforget.data.download" in message
    # an explicit data-dir is authoritative
    with pytest.raises(DataError, match="not searched because data-dir is set") as err:
        data.load_dataset("adult", data_dir=str(tmp_path / "nope"))
    assert f"data-dir {tmp_path / 'nope'}: does not exist" in str(err.value)
    monkeypatch.setenv(paths.ENV_VAR, str(tmp_path))
    with pytest.raises(DataError, match=f"{paths.ENV_VAR} {tmp_path}: exists but lacks"):
        data.load_dataset("letter")
    assert data.load_dataset("digits").name == "digits"  # bundled: no folder needed


def test_truncated_and_corrupt_files(root: Path, tmp_path: Path) -> None:
    folder = _needs(root, "mnist")
    (tmp_path / "mnist").mkdir()
    for source in folder.iterdir():
        (tmp_path / "mnist" / source.name).symlink_to(source)
    images = _idx_path(folder, "train", "images")
    (tmp_path / "mnist" / images.name).unlink()
    (tmp_path / "mnist" / images.name).write_bytes(images.read_bytes()[:100_000])
    with pytest.raises(DataError, match="corrupt or truncated") as err:
        data.load_dataset("mnist", tmp_path)
    assert str(tmp_path / "mnist" / images.name) in str(err.value)
    (tmp_path / "mnist" / images.name).write_bytes(gzip.compress(b"\x00\x00\x08\x01" + bytes(20)))
    with pytest.raises(DataError, match="bad magic number"):
        data.load_dataset("mnist", tmp_path)
    (tmp_path / "mnist" / images.name).unlink()
    with pytest.raises(DataError, match="train-images"):
        data.load_dataset("mnist", tmp_path)
    (tmp_path / "location").mkdir()
    (tmp_path / "location" / "dataset_location.tgz").write_bytes(b"not a tarball")
    with pytest.raises(DataError, match="dataset_location.tgz"):
        data.load_dataset("location", tmp_path)


# ------------------------------------------------------------------------------------------ csv / npz
def _write_csv(path: Path, rows: list[list[object]]) -> Path:
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    return path


def test_csv_loader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    labels = ["dog", "cat", "dog", "bird", "dog", "cat"] * 10  # 30 dog, 20 cat, 10 bird
    rows = [["a", "b", "Label", "c"]] + [[rng.normal(), i, lab, 5] for i, lab in enumerate(labels)]
    _write_csv(tmp_path / "t.csv", rows)
    monkeypatch.chdir(tmp_path)
    ds = data.load_dataset("csv:t.csv")  # relative to the current directory
    assert ds.info == DatasetInfo("csv:t.csv", (3,), 3, "tabular") == data.info("csv:t.csv")
    # labels by sorted value: bird=0, cat=1, dog=2; stratified 80/20
    np.testing.assert_array_equal(np.bincount(ds.y_train) + np.bincount(ds.y_test), [10, 20, 30])
    np.testing.assert_array_equal(np.bincount(ds.y_test), [2, 4, 6])
    assert np.abs(ds.x_train.mean(axis=0)).max() < 1e-5 and (ds.x_train[:, 2] == 0).all()
    assert np.all(np.diff(ds.x_train[:, 1]) > 0) and np.all(np.diff(ds.x_test[:, 1]) > 0)  # file order


def test_csv_split_column_and_last_column_label(tmp_path: Path) -> None:
    rows = [["x1", "split", "out"]] + [[i, "train" if i < 7 else "TEST", 10 + i % 2] for i in range(10)]
    ds = data.load_dataset(f"csv:{_write_csv(tmp_path / 's.csv', rows)}")
    assert (len(ds.y_train), len(ds.y_test), ds.num_classes) == (7, 3, 2)
    np.testing.assert_array_equal(ds.y_test, [1, 0, 1])  # labels 10/11 -> 0/1, rows 7, 8, 9


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        ("", "is empty"),
        ("a,label\n", "no data rows"),
        ("a,color,label\n1,red,0\n2,blue,1\n", "column 'color' must be numeric.*line 2 holds 'red'"),
        ("a,label\n1,0\n2\n", "line 3 has 1 fields"),
        ("a,label\n1,0\n\n  \nnan,1\n", "column 'a' must be numeric.*line 5 holds 'nan'"),
        ("a,label\n1,0\n2, \n", "empty label in column 'label' \\(line 3\\)"),
        ("a,split,label\n1,train,0\n2,val,1\n", "must hold train or test"),
    ],
)
def test_csv_errors(tmp_path: Path, content: str, pattern: str) -> None:
    (tmp_path / "bad.csv").write_text(content)
    with pytest.raises(DataError, match=pattern):
        data.load_dataset(f"csv:{tmp_path / 'bad.csv'}")


def test_csv_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        data.load_dataset(f"csv:{tmp_path / 'missing.csv'}")
    with pytest.raises(DataError, match="names no file"):
        data.load_dataset("npz:")


def test_npz_loader(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    np.savez(
        tmp_path / "tab.npz",
        x_train=rng.normal(3, 2, (40, 5)),
        y_train=np.arange(40) % 4 + 1,
        x_test=rng.normal(size=(10, 5)),
        y_test=np.arange(10) % 4 + 1,
    )
    tab = data.load_dataset(f"npz:{tmp_path / 'tab.npz'}")
    assert tab.info.kind == "tabular" and tab.info.input_shape == (5,) and tab.num_classes == 4
    np.testing.assert_array_equal(tab.y_train, np.arange(40) % 4)
    assert np.abs(tab.x_train.mean(axis=0)).max() < 1e-5
    grey = rng.integers(0, 256, (50, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "grey.npz", x=grey, y=np.arange(50) % 5)
    ds = data.load_dataset(f"npz:{tmp_path / 'grey.npz'}")
    assert ds.info.kind == "image" and ds.info.input_shape == (1, 8, 8)
    assert (len(ds.y_train), len(ds.y_test)) == (40, 10)
    np.testing.assert_allclose(
        ds.x_train[0, 0], grey[np.flatnonzero(np.arange(50) % 5 == ds.y_train[0])[0]] / 255
    )
    rgb = rng.integers(0, 256, (20, 6, 6, 3), dtype=np.uint8)
    ds = data.load_dataset(f"npz:{_save(tmp_path / 'rgb.npz', x_train=rgb, y_train=np.arange(20) % 2)}")
    assert ds.info.input_shape == (3, 6, 6)
    np.testing.assert_allclose(ds.x_train[3], rgb[3].transpose(2, 0, 1) / 255, atol=1e-7)
    with pytest.raises(DataError, match="expected x_train, y_train, x_test, y_test or x, y"):
        data.load_dataset(f"npz:{_save(tmp_path / 'bad.npz', features=grey)}")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(DataError, match="junk.npz"):
        data.load_dataset(f"npz:{tmp_path / 'junk.npz'}")


def _save(path: Path, **arrays: np.ndarray) -> Path:
    if "x_train" in arrays and "x_test" not in arrays:
        arrays.update(x_test=arrays["x_train"][:2], y_test=arrays["y_train"][:2])
    np.savez(path, **arrays)
    return path


# --------------------------------------------------------------------------- cifar10 sources & cache
def _fake_cifar_jpeg(folder: Path, n_train: int = 20, n_test: int = 10) -> dict[str, np.ndarray]:
    from PIL import Image

    rng = np.random.default_rng(2)
    arrays: dict[str, np.ndarray] = {}
    for split, n in (("train", n_train), ("test", n_test)):
        blobs = []
        for _ in range(n):
            buffer = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
                buffer, "JPEG", quality=75
            )
            blobs.append(buffer.getvalue())
        arrays[f"{split}_jpeg"] = np.frombuffer(b"".join(blobs), dtype=np.uint8)
        arrays[f"{split}_offsets"] = np.concatenate([[0], np.cumsum([len(b) for b in blobs])])
        arrays[f"y_{split}"] = (np.arange(n) % 10).astype(np.uint8)
    folder.mkdir(parents=True)
    np.savez(folder / "cifar10_jpeg_q75.npz", **arrays)
    return arrays


def test_cifar10_jpeg_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(paths.CACHE_ENV_VAR, str(tmp_path / "cache"))
    _fake_cifar_jpeg(tmp_path / "root" / "cifar10-jpeg")
    first = data.load_dataset("cifar10", tmp_path / "root")
    assert first.x_train.shape == (20, 3, 32, 32)
    cached = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert len(cached) == 2 and cached[0].endswith("-test.npy") and cached[1].endswith("-train.npy")

    def fail(*args: object) -> None:
        raise AssertionError("decoded again instead of using the cache")

    monkeypatch.setattr(images_mod, "decode_jpegs", fail)
    data.clear_cache()
    np.testing.assert_array_equal(data.load_dataset("cifar10", tmp_path / "root").x_train, first.x_train)


def test_cifar10_lossless_pickles(tmp_path: Path) -> None:
    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(3)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batches[name] = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
        with open(folder / name, "wb") as fh:
            pickle.dump({b"data": batches[name], b"labels": list(range(4))}, fh)
    _fake_cifar_jpeg(tmp_path / "cifar10-jpeg")  # lossless is preferred when both are present
    ds = data.load_dataset("cifar10", tmp_path)
    assert ds.x_train.shape == (20, 3, 32, 32) and ds.x_test.shape == (4, 3, 32, 32)
    mean = np.array(images_mod.CIFAR10_STATS[0])[:, None, None]
    std = np.array(images_mod.CIFAR10_STATS[1])[:, None, None]
    expected = (batches["data_batch_2"][1].reshape(3, 32, 32) / 255 - mean) / std
    np.testing.assert_allclose(ds.x_train[5], expected, atol=1e-5)  # batch 2, row 1 = global id 5
    shutil.rmtree(tmp_path / "cifar10-jpeg")
    (folder / "test_batch").write_bytes(b"garbage")
    data.clear_cache()
    with pytest.raises(DataError, match="test_batch"):
        data.load_dataset("cifar10", tmp_path)


# ---------------------------------------------------------------------------------------- download
def test_download_argument_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in ([], ["mnist"], ["svhn", "--to", str(tmp_path)]):
        with pytest.raises(SystemExit) as exit_info:
            download_main(argv)
        assert exit_info.value.code == 2
    (tmp_path / "file").write_text("x")
    with pytest.raises(SystemExit):
        download_main(["mnist", "--to", str(tmp_path / "file")])
    assert "is not a folder" in capsys.readouterr().err


# ------------------------------------------------------------------------- user files: gz, classes, tails
def test_csv_gz_reads_like_the_plain_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    rows = [["a", "b", "label"]] + [[rng.normal(), rng.normal(), i % 3] for i in range(40)]
    plain = _write_csv(tmp_path / "t.csv", rows)
    packed = tmp_path / "t.csv.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    a, b = data.load_dataset(f"csv:{plain}"), data.load_dataset(f"csv:{packed}")
    assert b.info.input_shape == (2,) and b.num_classes == 3
    for x, y in ((a.x_train, b.x_train), (a.x_test, b.x_test), (a.y_train, b.y_train)):
        np.testing.assert_array_equal(x, y)
    (tmp_path / "bad.csv.gz").write_bytes(gzip.compress(plain.read_bytes())[:30])  # truncated
    with pytest.raises(DataError, match="Cannot read"):
        data.load_dataset(f"csv:{tmp_path / 'bad.csv.gz'}")


def test_a_single_class_file_is_an_error(tmp_path: Path) -> None:
    rows = [["a", "b", "label"]] + [[i, i * 2, "yes"] for i in range(20)]
    with pytest.raises(DataError, match="label column 'label' holds a single class"):
        data.load_dataset(f"csv:{_write_csv(tmp_path / 'one.csv', rows)}")
    np.savez(tmp_path / "one.npz", x=np.ones((10, 3)), y=np.full(10, 7))
    with pytest.raises(DataError, match="single class"):
        data.load_dataset(f"npz:{tmp_path / 'one.npz'}")


def test_heavy_tailed_columns_are_robust_scaled_and_others_standardised(tmp_path: Path) -> None:
    """One outlier blows a column's std: standardised, the bulk collapses to ~0 and the outliers are
    inputs of size ~100 (SGD diverges); robust-scaled, the bulk keeps its spread and nothing is huge."""
    rng = np.random.default_rng(5)
    n = 2000
    heavy = 40.0 + 300.0 * rng.standard_t(1.2, size=n)  # Student-t tails, like the shuttle columns
    normal = rng.normal(3.0, 2.0, size=n)
    pairs = enumerate(zip(heavy, normal, strict=True))
    rows = [["heavy", "normal", "label"]] + [[h, v, i % 2] for i, (h, v) in pairs]
    ds = data.load_dataset(f"csv:{_write_csv(tmp_path / 'tails.csv', rows)}")
    x = ds.x_train
    assert np.abs(x).max() < 12  # standardised, the heavy column reached ~40
    q25, q75 = np.percentile(x[:, 0], [25, 75])
    assert q75 - q25 > 0.8  # the bulk keeps its spread (standardised: ~0.04)
    from fedforget.data.preprocess import scale_features, standardise

    train = np.stack([heavy, normal], axis=1)
    scaled, _, robust = scale_features(train, train[:5])
    assert robust == [0]  # only the heavy column
    np.testing.assert_allclose(scaled[:, 1], standardise(train, train)[0][:, 1], atol=1e-6)
    order = np.argsort(train[:, 0], kind="stable")
    assert np.all(np.diff(scaled[order, 0]) >= 0)  # a monotone transform: the order of values is kept
