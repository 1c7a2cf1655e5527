"""Small CNN for CIFAR-10 sized images (no batch norm, so FedAvg needs no special handling).

Architecture for a ``C x H x W`` input::

    [Conv2d(C, 32, 3, padding=1)  -> ReLU -> MaxPool(2)]   # 32x32 -> 16x16
    [Conv2d(32, 64, 3, padding=1) -> ReLU -> MaxPool(2)]   # 16x16 -> 8x8
    [Conv2d(64, 128, 3, padding=1) -> ReLU -> MaxPool(2)]  # 8x8   -> 4x4
    Flatten -> Linear(128*h*w, 128) -> ReLU -> Dropout(p) -> Linear(128, K)

``h, w = H // 8, W // 8`` (computed from the input shape; images must be at least 8 x 8). Dropout
defaults to 0. Parameters: cifar10 (3x32x32, K=10) 356,810; mnist (1x28x28, 10) 241,546.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import nn

from fedforget.models.pooling import MaxPool2x2

MIN_SIZE = 8
"""Smallest height/width that survives the three 2x2 poolings of the default architecture."""


class CifarCNN(nn.Module):
    """Three conv blocks + two FC layers: ``N x C x H x W`` float32 -> ``N x num_classes`` logits."""

    loss_name: ClassVar[str] = "cross_entropy"

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        channels: Sequence[int] = (32, 64, 128),
        hidden: int = 128,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise ValueError(f"CifarCNN needs a C x H x W input shape, got {tuple(input_shape)}")
        in_channels, height, width = (int(d) for d in input_shape)
        smallest = 2 ** len(channels)
        if min(height, width) < smallest:
            raise ValueError(f"CifarCNN needs images of at least {smallest}x{smallest}, got {height}x{width}")
        self.input_shape: tuple[int, ...] = (in_channels, height, width)
        self.num_classes = int(num_classes)
        blocks: list[nn.Module] = []
        for out_channels in channels:
            blocks += [nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.ReLU(), MaxPool2x2()]
            in_channels = out_channels
            height, width = height // 2, width // 2
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_channels * height * width, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, self.num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
