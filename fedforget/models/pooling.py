"""2 x 2 max-pooling that is fast where no gradient is needed (inference, scoring, line searches).

PyTorch's CPU ``max_pool2d`` kernel is slow for small feature maps (in a scratch timing on one thread it
was a large share of LeNet's no-grad forward pass). Without autograd, the same pooling is two
element-wise maxima over strided views:

    out[n, c, i, j] = max(x[n, c, 2i, 2j], x[n, c, 2i, 2j+1], x[n, c, 2i+1, 2j], x[n, c, 2i+1, 2j+1])

which gives bit-identical outputs (the maximum of the same four floats) at a lower cost. With
autograd (training, gradients) the module is ``nn.MaxPool2d(2)`` itself, so gradients and the routing
of ties are exactly PyTorch's. Odd trailing rows and columns are dropped, as
``nn.MaxPool2d(2)`` (floor mode) drops them.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["MaxPool2x2"]


class MaxPool2x2(nn.MaxPool2d):
    """``nn.MaxPool2d(2)`` with a faster, bit-identical path when no gradient flows (module docstring)."""

    def __init__(self) -> None:
        super().__init__(kernel_size=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (torch.is_grad_enabled() and x.requires_grad) or x.dim() < 3:
            return super().forward(x)
        height, width = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
        x = x[..., :height, :width]
        rows = torch.maximum(x[..., 0::2, :], x[..., 1::2, :])
        return torch.maximum(rows[..., 0::2], rows[..., 1::2])
