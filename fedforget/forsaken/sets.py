"""The three sets of one unlearning call on the model's device, their fit / check splits and batches.

Contract (seeded by ``ForsakenConfig.seed``, ``docs/forsaken.md``, Applying a step):

* the **reference** set ``R`` is split: two thirds ``R_fit`` give the targets and the reference term,
  one third ``R_check`` measures the accuracy guard on data the objective never sees (with fewer than
  :data:`MIN_SPLIT` samples both are the whole set); the per-step AUC reads up to :data:`MAX_MEASURE`
  reference samples, ``R_check`` first;
* the **retained** set ``K`` is split the same way (``K_fit`` for the retain term, ``K_check`` for the
  guard: the retain term drives the accuracy on its own samples *up*);
* batches of ``F``, ``R_fit`` and ``K_fit`` come from one seeded stream of index batches, each set
  reshuffled at each pass.
"""

from __future__ import annotations

import dataclasses

import torch

from fedforget.forsaken.inputs import Pair

__all__ = ["MAX_MEASURE", "MIN_SPLIT", "Batch", "Batches", "Sets"]

SEED_BATCHES = 101  # decorrelates the batch-order stream from the generator's initial weights
SEED_SPLIT = 211  # seeds the fit / check split of the reference set (+1: of the retained set)
MIN_SPLIT = 6
"""Smallest reference / retained set that is split into fit and check parts."""
MAX_MEASURE = 1024
"""Held-out retained samples (retain accuracy) and reference samples (AUC) measured per step."""


@dataclasses.dataclass(frozen=True)
class Batch:
    """Index batches into ``F``, ``K_fit`` and ``R_fit``."""

    forget: torch.Tensor
    retain: torch.Tensor
    reference: torch.Tensor


class Batches:
    """Seeded, endless stream of index batches over ``n`` samples (reshuffled at each pass)."""

    def __init__(self, n: int, size: int, generator: torch.Generator) -> None:
        self.n, self.size, self.generator = n, min(size, n), generator
        self.queue: list[torch.Tensor] = []

    def next(self) -> torch.Tensor:
        if not self.queue:
            order = torch.randperm(self.n, generator=self.generator)
            whole = self.n // self.size * self.size
            self.queue = list(order[:whole].split(self.size)) if whole else [order]
        return self.queue.pop(0)


def _split(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(order, fit, check) of a seeded permutation of ``n`` samples: check = the first third."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    num_check = n // 3 if n >= MIN_SPLIT else 0
    fit, check = (order[num_check:], order[:num_check]) if num_check else (order, order)
    return order, fit, check


class Sets:
    """Tensors ``xf, yf`` (F), ``xr, yr`` (R_fit), ``xc, yc`` (R_check), ``xk, yk`` (K_fit), ``xkc, ykc``
    (K_check); numpy ``forget_np``, ``reference_fit_np`` and ``reference_np`` (the AUC's part of R)."""

    def __init__(
        self, *, forget: Pair, reference: Pair, retain: Pair, seed: int, batch_size: int, device: torch.device
    ) -> None:
        def t(pair: Pair) -> tuple[torch.Tensor, torch.Tensor]:
            return torch.as_tensor(pair[0], device=device), torch.as_tensor(pair[1], device=device)

        self.forget_np = forget
        self.xf, self.yf = t(forget)
        order, fit, check = _split(len(reference[1]), seed + SEED_SPLIT)
        auc_part = order[:MAX_MEASURE].numpy()
        self.reference_np = (reference[0][auc_part], reference[1][auc_part])
        fit_np = fit.cpu().numpy()
        self.reference_fit_np = (reference[0][fit_np], reference[1][fit_np])
        xr, yr = t(reference)
        self.xr, self.yr = xr[fit.to(device)], yr[fit.to(device)]
        self.xc, self.yc = xr[check.to(device)], yr[check.to(device)]
        xk, yk = t(retain)
        _, fit_k, check_k = _split(len(retain[1]), seed + SEED_SPLIT + 1)
        self.xk, self.yk = xk[fit_k.to(device)], yk[fit_k.to(device)]
        self.xkc, self.ykc = xk[check_k.to(device)], yk[check_k.to(device)]
        rng = torch.Generator().manual_seed(seed * 1000 + SEED_BATCHES)
        self._forget = Batches(len(self.yf), batch_size, rng)
        self._reference = Batches(len(self.yr), batch_size, rng)
        self._retain = Batches(len(self.yk), batch_size, rng)

    def next_batch(self) -> Batch:
        """The next batch of each set (drawn in the order forget, retain, reference)."""
        return Batch(self._forget.next(), self._retain.next(), self._reference.next())
