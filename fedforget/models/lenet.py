"""LeNet-5 style convolutional network (ReLU + max-pooling variant).

Architecture for a ``C x H x W`` input::

    Conv2d(C, 6, 5, padding=2) -> ReLU -> MaxPool(2)       # 28x28 -> 28x28 -> 14x14
    Conv2d(6, 16, 5)           -> ReLU -> MaxPool(2)       # 14x14 -> 10x10 -> 5x5
    Flatten -> Linear(16*h*w, 120) -> ReLU -> Linear(120, 84) -> ReLU -> Linear(84, K)

``h, w`` (5 x 5 for 28 x 28 inputs, 6 x 6 for 32 x 32) are computed from the input shape, so any
image of at least 12 x 12 works. Parameters: mnist (1x28x28, K=10) 61,706; cifar10 (3x32x32, 10)
83,126.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import nn

from fedforget.models.pooling import MaxPool2x2

MIN_SIZE = 12
"""Smallest height/width that leaves a non-empty feature map after the two conv/pool stages."""


def feature_size(size: int) -> int:
    """Spatial size after conv1 (same padding), pool, conv2 (5x5 valid), pool."""
    return (size // 2 - 4) // 2


class LeNet(nn.Module):
    """LeNet-5 style CNN: ``N x C x H x W`` float32 -> ``N x num_classes`` logits."""

    loss_name: ClassVar[str] = "cross_entropy"

    def __init__(self, input_shape: Sequence[int], num_classes: int) -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise ValueError(f"LeNet needs a C x H x W input shape, got {tuple(input_shape)}")
        channels, height, width = (int(d) for d in input_shape)
        if min(height, width) < MIN_SIZE:
            raise ValueError(f"LeNet needs images of at least {MIN_SIZE}x{MIN_SIZE}, got {height}x{width}")
        self.input_shape: tuple[int, ...] = (channels, height, width)
        self.num_classes = int(num_classes)
        self.features = nn.Sequential(
            nn.Conv2d(channels, 6, kernel_size=5, padding=2),
            nn.ReLU(),
            MaxPool2x2(),
            nn.Conv2d(6, 16, kernel_size=5),
            nn.ReLU(),
            MaxPool2x2(),
        )
        flat = 16 * feature_size(height) * feature_size(width)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(flat, 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, self.num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
