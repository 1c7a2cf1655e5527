"""ResNet-18 (torchvision, ``weights=None``) adapted to 32 x 32 images.

torchvision's ``resnet18`` is built for 224 x 224 ImageNet images: a 7x7 stride-2 stem followed by
a stride-2 max-pool, which would shrink a CIFAR image to 8 x 8 before the first residual stage.
The usual CIFAR adaptation, used here, replaces the stem with a 3x3 stride-1 convolution (no bias)
and drops the max-pool; the four residual stages (64, 128, 256, 512 channels, two BasicBlocks
each, with batch norm) and the global-average-pool + ``Linear(512, K)`` head are torchvision's.

:class:`ResNet18` subclasses ``torchvision.models.ResNet`` and is constructed exactly like
``torchvision.models.resnet18(weights=None, num_classes=K)``, so its state_dict keys are the
torchvision ones (``conv1.weight``, ``layer1.0.bn1.running_mean``, ``fc.weight``, ...).
Parameters: cifar10 (3x32x32, K=10) 11,173,962 (plus 9,620 batch-norm buffers).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet

MIN_SIZE = 8
"""Smallest height/width accepted (the three stride-2 stages leave a 1 x 1 map)."""


class ResNet18(ResNet):
    """CIFAR-style ResNet-18: ``N x C x H x W`` float32 -> ``N x num_classes`` logits."""

    loss_name: ClassVar[str] = "cross_entropy"

    def __init__(self, input_shape: Sequence[int], num_classes: int) -> None:
        # Same call as torchvision.models.resnet18(weights=None, num_classes=num_classes).
        super().__init__(BasicBlock, [2, 2, 2, 2], num_classes=int(num_classes))
        if len(input_shape) != 3:
            raise ValueError(f"ResNet18 needs a C x H x W input shape, got {tuple(input_shape)}")
        channels, height, width = (int(d) for d in input_shape)
        if min(height, width) < MIN_SIZE:
            raise ValueError(f"ResNet18 needs images of at least {MIN_SIZE}x{MIN_SIZE}, got {height}x{width}")
        self.input_shape: tuple[int, ...] = (channels, height, width)
        self.num_classes = int(num_classes)
        self.conv1 = nn.Conv2d(channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")  # as torchvision
        self.maxpool = nn.Identity()
