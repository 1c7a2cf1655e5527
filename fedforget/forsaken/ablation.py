"""The ablations of the mask generator (``ForsakenConfig.gates``, ``docs/forsaken.md``, Ablation).

Both keep the rest of the loop as it is (targets, objective, line search, accuracy guard, schedule,
stopping); only the step each unlearning step proposes changes:

* ``gates="fixed"``: no generator; every neuron's gates are ``a_j = b_j = 1``, so the proposed step is
  ``m = eta (D^f + D^k)`` (:mod:`fedforget.forsaken.mask`), with no gate floor.
* ``gates="none"``: plain fine-tuning towards the targets. The proposed step is one Adam step on J's
  forget and keep terms (no sparsity term) with respect to the maskable parameters::

      g_t = dJ/dw,  m_t = 0.9 m_{t-1} + 0.1 g_t,  v_t = 0.999 v_{t-1} + 0.001 g_t^2,
      u_p = -RMS(w_0,p) * m_hat_t / (sqrt(v_hat_t) + 1e-8)        (per tensor p)

  and the mask of size ``eta * s`` is ``eta * s * u``: every weight moves by about ``eta`` times its
  tensor's RMS at scale 1, as Adam with learning rate ``eta * RMS`` would. The moments persist across
  steps (also across rejected ones).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from fedforget.forsaken.objective import Objective
from fedforget.forsaken.sets import Batch

__all__ = ["FineTuning", "fixed_gates"]

BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


def fixed_gates(num_neurons: int, device: torch.device) -> torch.Tensor:
    """``N x 2`` gates, all 1 (``gates="fixed"``)."""
    return torch.ones(num_neurons, 2, device=device)


class FineTuning:
    """``gates="none"``: each step proposes one Adam step on J (module docstring)."""

    def __init__(self, objective: Objective) -> None:
        weights = objective.weights
        self.objective = objective
        self.rms = {n: max(float(weights.base[n].pow(2).mean().sqrt()), 1e-3) for n in weights.masked}
        self.first = {n: torch.zeros_like(weights.base[n]) for n in weights.masked}
        self.second = {n: torch.zeros_like(weights.base[n]) for n in weights.masked}
        self.t = 0

    def proposal(self, batch: Batch) -> Callable[[float], dict[str, torch.Tensor]]:
        """size -> the mask ``size * u`` of this step's Adam direction ``u`` on ``batch``."""
        objective, weights = self.objective, self.objective.weights
        current = weights.params()
        leaves = {n: current[n].clone().requires_grad_(n in weights.masked) for n in current}
        total = objective.total(objective.terms(leaves, batch))
        grads = torch.autograd.grad(total, [leaves[n] for n in weights.masked], allow_unused=True)
        self.t += 1
        b1, b2 = BETAS
        step: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            for n, g in zip(weights.masked, grads, strict=True):
                g = torch.zeros_like(current[n]) if g is None else g
                self.first[n] = b1 * self.first[n] + (1 - b1) * g
                self.second[n] = b2 * self.second[n] + (1 - b2) * g * g
                first = self.first[n] / (1 - b1**self.t)
                second = self.second[n] / (1 - b2**self.t)
                step[n] = -self.rms[n] * first / (second.sqrt() + ADAM_EPS)

        def propose(size: float) -> dict[str, torch.Tensor]:
            return {n: size * d for n, d in step.items()}

        return propose
