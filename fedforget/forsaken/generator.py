"""The mask gradient generator: one small network shared by every neuron of the model.

``MaskGenerator`` maps a neuron's feature vector (:data:`fedforget.forsaken.neurons.FEATURE_NAMES`)
to two gates in ``(0, 2)``: ``a_j = 2 sigmoid(z_j1)`` weighs the neuron's forgetting direction and
``b_j = 2 sigmoid(z_j2)`` its repair direction (descent on the retained / reference terms). A neuron
whose ``a_j`` is below the floor is not touched at all (both gates are set to exactly 0 in the applied
mask, :meth:`MaskGenerator.hard`), which is what makes the mask sparse; training uses the smooth
gates, so no neuron's gradient dies. Architecture: ``Linear(F, H) -> tanh -> Linear(H, H) -> tanh ->
Linear(H, 2)`` with ``F = 11`` features and ``H = 16``: 498 parameters, whatever the model's size.
"""

from __future__ import annotations

import torch
from torch import nn

from fedforget.forsaken.neurons import NUM_FEATURES

__all__ = ["INITIAL_GATE", "MaskGenerator"]

INITIAL_GATE = 0.5
"""Both gates of every neuron before the generator is trained (the output bias is set to reach it)."""


class MaskGenerator(nn.Module):
    """Per-neuron features ``N x F`` -> gates ``N x 2`` (forget, repair) in ``(0, 2)``."""

    def __init__(self, num_features: int = NUM_FEATURES, hidden: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(num_features, hidden),
            nn.Tanh(),
            nn.Linear(hidden, hidden),
            nn.Tanh(),
            nn.Linear(hidden, 2),
        )
        last = self.net[-1]
        assert isinstance(last, nn.Linear)
        with torch.no_grad():
            last.weight.mul_(0.1)
            last.bias.fill_(float(torch.logit(torch.tensor(INITIAL_GATE / 2))))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Smooth gates ``N x 2`` in ``(0, 2)``: column 0 forget, column 1 repair."""
        return 2.0 * torch.sigmoid(self.net(features))

    @staticmethod
    def hard(gates: torch.Tensor, floor: float) -> torch.Tensor:
        """The applied gates: rows whose forget gate is below ``floor`` become exactly 0."""
        return gates * (gates[:, :1] >= floor).to(gates.dtype)

    @classmethod
    def seeded(cls, seed: int, hidden: int = 16) -> MaskGenerator:
        """A generator whose initial weights depend only on ``seed`` (the global RNG is left untouched)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            return cls(hidden=hidden)
