"""Datasets for fedforget: one call gives preprocessed arrays in a canonical, stable order.

Public API::

    load(config: RunConfig) -> Dataset                    # config.dataset, config.data_dir
    load_dataset(name, data_dir=None) -> Dataset
    info(name, data_dir=None) -> DatasetInfo               # no data read for registry names
    available() -> list[str]
    resolve_data_root(data_dir=None, require=None) -> Path
    clear_cache() -> None

``x_train[i]`` is the sample with global id ``i`` (see each loader module for its canonical order).
Loads are cached in-process per (name, resolved data root) -- Flower clients call :func:`load`
every round -- and the returned arrays are read-only so the cache cannot be corrupted; copy an
array (``np.array(x)``) before modifying it.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING

from fedforget.data.base import DataError, Dataset, DatasetInfo
from fedforget.data.files import load_csv, load_npz
from fedforget.data.paths import resolve_data_root
from fedforget.data.registry import available, canonical_name, entry, file_spec, is_file_name

if TYPE_CHECKING:
    from fedforget.config import RunConfig

__all__ = [
    "DataError",
    "Dataset",
    "DatasetInfo",
    "available",
    "clear_cache",
    "info",
    "load",
    "load_dataset",
    "resolve_data_root",
]


def load(config: RunConfig) -> Dataset:
    """The dataset a run config names (``dataset``, ``data-dir``)."""
    return load_dataset(config.dataset, config.data_dir or None)


def load_dataset(name: str, data_dir: str | os.PathLike[str] | None = None) -> Dataset:
    """Load a registry dataset (see :func:`available`) or a ``csv:PATH`` / ``npz:PATH`` file.

    ``data_dir`` is the dataset root (see :func:`resolve_data_root` for the search when it is
    empty); it is ignored for the scikit-learn bundled datasets and for user files.
    """
    if is_file_name(name):
        kind, path = file_spec(name)
        stat = path.stat()
        return _load_file(kind, name.strip(), path, stat.st_size, stat.st_mtime_ns)
    item = entry(name)
    root = resolve_data_root(data_dir, item.requires) if item.requires else None
    return _load_registry(canonical_name(name), root)


def info(name: str, data_dir: str | os.PathLike[str] | None = None) -> DatasetInfo:
    """Static info for a registry dataset (reads nothing); a csv/npz file is read to find out."""
    if is_file_name(name):
        return load_dataset(name, data_dir).info
    return entry(name).info


def clear_cache() -> None:
    """Forget every dataset loaded in this process."""
    _load_registry.cache_clear()
    _load_file.cache_clear()


@functools.lru_cache(maxsize=8)
def _load_registry(name: str, root: Path | None) -> Dataset:
    item = entry(name)
    dataset = item.loader(root) if root is not None else item.loader(Path())
    if dataset.info != item.info:
        raise DataError(f"{name}: loaded data has {dataset.info}, the registry says {item.info}")
    return dataset


@functools.lru_cache(maxsize=8)
def _load_file(kind: str, name: str, path: Path, size: int, mtime_ns: int) -> Dataset:
    return load_csv(path, name) if kind == "csv" else load_npz(path, name)
