"""Multi-layer perceptron for tabular data (and, flattened, for any input shape).

Architecture (``hidden=(256, 128)``, the default)::

    Flatten -> Linear(D, 256) -> ReLU -> Dropout(p) -> Linear(256, 128) -> ReLU -> Dropout(p)
            -> Linear(128, K)

Dropout defaults to ``p = 0`` (an identity, kept so the state_dict layout does not depend on ``p``).
Parameters: ``(D + 1) * 256 + 257 * 128 + 129 * K``, e.g. digits (D=64, K=10) 50,826;
breast-cancer (30, 2) 41,090; letter (16, 26) 40,602; location (446, 30) 151,198;
adult (108, 2) 61,058; mnist flattened (784, 10) 235,146; cifar10 flattened (3072, 10) 820,874.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import nn


class MLP(nn.Module):
    """Fully connected ReLU network: ``N x input_shape`` float32 -> ``N x num_classes`` logits."""

    loss_name: ClassVar[str] = "cross_entropy"

    def __init__(
        self,
        input_dim: int | Sequence[int],
        num_classes: int,
        hidden: Sequence[int] = (256, 128),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        shape = (int(input_dim),) if isinstance(input_dim, int) else tuple(int(d) for d in input_dim)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.input_shape: tuple[int, ...] = shape
        self.num_classes = int(num_classes)
        self.hidden: tuple[int, ...] = tuple(int(h) for h in hidden)
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(shape)
        for h in self.hidden:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)]
            width = h
        layers.append(nn.Linear(width, self.num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
