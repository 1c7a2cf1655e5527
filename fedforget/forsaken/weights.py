"""The weights being unlearned: ``w = w_0 + M``, the original weights plus the accumulated mask.

Contract: ``base`` (``w_0``) is never changed; ``delta`` (``M``) holds a tensor for every parameter of
the model (zero where untouched) and is only ever *replaced* (``add`` / ``subtract`` build new tensors),
so a shallow copy of it is a snapshot. Every forward pass runs the parameters given through
``torch.func.functional_call`` on an eval-mode copy of the model: BatchNorm running statistics stay
frozen and the caller's model is never modified.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
from torch import nn
from torch.func import functional_call

from fedforget.forsaken.neurons import Layer, find_layers

__all__ = ["CHUNK", "Weights", "chunked", "set_params"]

CHUNK = 512
"""Samples per forward pass when a whole set is evaluated."""


def chunked(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)`` evaluated :data:`CHUNK` samples at a time."""
    return torch.cat([module(x[b : b + CHUNK]) for b in range(0, len(x), CHUNK)])


def set_params(model: nn.Module, values: Mapping[str, torch.Tensor]) -> None:
    """Copy ``values[name]`` into every named parameter of ``model`` (in place, without gradients)."""
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(values[n])


class Weights:
    """``w_0`` (``base``), the mask ``M`` (``delta``), the maskable layers and their parameter names."""

    def __init__(self, model: nn.Module) -> None:
        self.work = copy.deepcopy(model).eval()  # eval mode: BatchNorm running statistics stay frozen
        self.layers: list[Layer] = find_layers(self.work)
        for p in self.work.parameters():
            p.requires_grad_(False)
        self.masked = [name for layer in self.layers for name in layer.params]
        """Names of the parameters a mask may change (those of the neurons' layers), in layer order."""
        self.base = {n: p.detach().clone() for n, p in self.work.named_parameters()}
        self.delta = {n: torch.zeros_like(p) for n, p in self.base.items()}
        self._snapshot = copy.deepcopy(self.work)  # a plain module holding w (what an oracle judges)

    @property
    def num_neurons(self) -> int:
        return sum(layer.num_neurons for layer in self.layers)

    def params(self) -> dict[str, torch.Tensor]:
        """The current weights ``w_0 + M``."""
        return {n: self.base[n] + self.delta[n] for n in self.base}

    def forward(self, params: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """The model's scores on ``x`` with the weights ``params``."""
        return functional_call(self.work, dict(params), (x,))

    def add(self, mask: Mapping[str, torch.Tensor]) -> None:
        """``M <- M + mask``."""
        for n, m in mask.items():
            self.delta[n] = self.delta[n] + m

    def subtract(self, mask: Mapping[str, torch.Tensor]) -> None:
        """``M <- M - mask`` (undoes :meth:`add`)."""
        for n, m in mask.items():
            self.delta[n] = self.delta[n] - m

    def snapshot(self) -> nn.Module:
        """An eval-mode module holding the current weights (the same object each call, refreshed)."""
        with torch.no_grad():
            for n, p in self._snapshot.named_parameters():
                p.copy_(self.base[n] + self.delta[n])
            self._snapshot.eval()
        return self._snapshot
