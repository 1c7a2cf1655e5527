"""Linear models: multinomial logistic regression and a linear multi-class SVM.

Both are ``Flatten -> Linear(D, K)`` (``(D + 1) * K`` parameters, e.g. digits (64, 10) 650,
breast-cancer (30, 2) 62, letter (16, 26) 442, location (446, 30) 13,410, mnist (784, 10) 7,850,
cifar10 (3072, 10) 30,730). They differ only in
the loss they are trained with: :class:`LogisticRegression` uses cross-entropy (softmax
regression), :class:`LinearSVM` the multi-class hinge loss ``nn.MultiMarginLoss`` (Weston-Watkins
style: ``sum_{j != y} max(0, 1 - s_y + s_j) / K``). The training code picks the loss with
:func:`fedforget.models.criterion_for`, which reads the class attribute ``loss_name``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import nn


class LinearModel(nn.Module):
    """Flatten + one affine layer: ``N x input_shape`` float32 -> ``N x num_classes`` scores."""

    loss_name: ClassVar[str] = "cross_entropy"

    def __init__(self, input_shape: int | Sequence[int], num_classes: int) -> None:
        super().__init__()
        shape = (int(input_shape),) if isinstance(input_shape, int) else tuple(int(d) for d in input_shape)
        self.input_shape: tuple[int, ...] = shape
        self.num_classes = int(num_classes)
        self.flatten = nn.Flatten()
        self.linear = nn.Linear(math.prod(shape), self.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.flatten(x))


class LogisticRegression(LinearModel):
    """Multinomial logistic regression (softmax regression); trained with cross-entropy."""

    loss_name: ClassVar[str] = "cross_entropy"


class LinearSVM(LinearModel):
    """Linear multi-class SVM; trained with the multi-class hinge loss (``nn.MultiMarginLoss``)."""

    loss_name: ClassVar[str] = "multi_margin"
