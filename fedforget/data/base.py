"""The in-memory dataset every other module works with."""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np


class DataError(ValueError):
    """A dataset that cannot be found, read or used: the message says where and why."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a dataset without loading it."""

    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    kind: Literal["image", "tabular"]


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """A preprocessed dataset in canonical order.

    ``x_train[i]`` is the sample with **global id** ``i``: its index in the dataset's canonical
    train split. Features are float32 (images ``N x C x H x W``, tabular ``N x D``), labels int64 in
    ``[0, num_classes)``.
    """

    info: DatasetInfo
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[str | float, ...] | None = None
    """For ``csv:``/``npz:`` files: the raw label of each class code (``classes[k]`` is the label that
    code ``k`` stands for, sorted as the codes are); None for registry datasets."""

    def __post_init__(self) -> None:
        for split, x, y in (("train", self.x_train, self.y_train), ("test", self.x_test, self.y_test)):
            if len(x) != len(y):
                raise DataError(f"{self.info.name}: {split} has {len(x)} samples but {len(y)} labels")
            if tuple(x.shape[1:]) != self.info.input_shape:
                raise DataError(
                    f"{self.info.name}: {split} samples have shape {tuple(x.shape[1:])}, "
                    f"expected {self.info.input_shape}"
                )
            if len(y) and (y.min() < 0 or y.max() >= self.info.num_classes):
                raise DataError(f"{self.info.name}: {split} labels outside [0, {self.info.num_classes})")

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def num_classes(self) -> int:
        return self.info.num_classes

    @property
    def num_train(self) -> int:
        return len(self.y_train)
