"""Dataset names -> static :class:`DatasetInfo` and loader.

Registry names: ``mnist``, ``fashion-mnist``, ``cifar10``, ``adult``, ``location``, ``letter``,
``digits``, ``breast-cancer``, ``memorise`` (synthetic, see :mod:`fedforget.data.synthetic`; a few
aliases such as ``fmnist`` or ``cifar-10`` are accepted), plus user files ``csv:PATH`` and
``npz:PATH``. Names are case-insensitive.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable
from pathlib import Path

from fedforget.data import bundled, images, synthetic, tabular
from fedforget.data.base import DataError, Dataset, DatasetInfo

FILE_PREFIXES = ("csv:", "npz:")


@dataclasses.dataclass(frozen=True)
class Entry:
    """One registry dataset: its static info, its loader and the root sub-paths it needs (any one)."""

    info: DatasetInfo
    loader: Callable[[Path], Dataset]
    requires: tuple[str, ...]  # empty: needs no data folder (bundled with a dependency)


REGISTRY: dict[str, Entry] = {
    "mnist": Entry(images.MNIST_INFO, images.load_mnist, ("mnist",)),
    "fashion-mnist": Entry(images.FASHION_INFO, images.load_fashion_mnist, ("fashion-mnist",)),
    "cifar10": Entry(
        images.CIFAR10_INFO, images.load_cifar10, (images.CIFAR10_LOSSLESS_DIR, images.CIFAR10_JPEG)
    ),
    "adult": Entry(tabular.ADULT_INFO, tabular.load_adult, ("adult",)),
    "location": Entry(tabular.LOCATION_INFO, tabular.load_location, ("location",)),
    "letter": Entry(tabular.LETTER_INFO, tabular.load_letter, ("letter",)),
    "digits": Entry(bundled.DIGITS_INFO, bundled.load_digits, ()),
    "breast-cancer": Entry(bundled.BREAST_CANCER_INFO, bundled.load_breast_cancer, ()),
    "memorise": Entry(synthetic.MEMORISE_INFO, synthetic.load_memorise, ()),
}

ALIASES = {
    "fashion_mnist": "fashion-mnist",
    "fashionmnist": "fashion-mnist",
    "fmnist": "fashion-mnist",
    "cifar-10": "cifar10",
    "cifar_10": "cifar10",
    "breast_cancer": "breast-cancer",
    "breastcancer": "breast-cancer",
    "memorize": "memorise",
}


def available() -> list[str]:
    """The registry dataset names (``csv:PATH`` and ``npz:PATH`` are accepted too)."""
    return list(REGISTRY)


def is_file_name(name: str) -> bool:
    """Whether ``name`` is a ``csv:PATH`` / ``npz:PATH`` user file."""
    return name.strip().lower().startswith(FILE_PREFIXES)


def canonical_name(name: str) -> str:
    """The registry name for ``name`` (case and aliases folded), else a DataError with a suggestion."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key in REGISTRY:
        return key
    close = difflib.get_close_matches(key, list(REGISTRY) + list(ALIASES), n=1, cutoff=0.5)
    hint = f" Did you mean '{ALIASES.get(close[0], close[0])}'?" if close else ""
    raise DataError(
        f"Unknown dataset '{name}'.{hint} Available: {', '.join(REGISTRY)}; "
        "or a file given as csv:PATH or npz:PATH."
    )


def entry(name: str) -> Entry:
    """The registry entry for ``name`` (see :func:`canonical_name`)."""
    return REGISTRY[canonical_name(name)]


def file_spec(name: str) -> tuple[str, Path]:
    """``("csv" | "npz", absolute path)`` for a ``csv:PATH`` / ``npz:PATH`` name; checks it exists."""
    kind, _, raw = name.strip().partition(":")
    kind = kind.lower()
    if not raw.strip():
        raise DataError(f"Dataset '{name}' names no file: write {kind}:/path/to/file.{kind}")
    path = Path(raw.strip()).expanduser().absolute()
    if not path.is_file():
        raise DataError(f"Dataset file {path} (from '{name}') does not exist or is not a file")
    return kind, path
