"""Machine-independent cost: sample-passes, counted by the code.

A **forward sample-pass** is one sample through one forward pass of a model; a **backward
sample-pass** is one sample through the backward pass of a forward taken with autograd on. The cost
of a piece of work is::

    sample-passes = forward + backward

so one SGD step on a batch of ``n`` costs ``2n`` (training a federation for ``R`` rounds of ``E``
local epochs over ``N`` samples costs ``2 * R * E * N`` plus its evaluations), and scoring ``n``
samples under ``torch.no_grad`` costs ``n``. Seconds depend on the machine and its load; these counts
do not, which is why the benchmarks report both (docs/forsaken.md, "Cost").

How it is counted: every model built by :func:`fedforget.models.build_model` carries
:func:`count_forward` as a forward hook (copies made with ``copy.deepcopy`` carry it too). While a
:func:`count_sample_passes` block is open, each forward of such a model adds its batch size to
``forward`` and, when grad mode is on, to ``backward`` as well: a forward under autograd is taken to
be followed by its backward. That is exact for training and an upper bound for an unlearning method
(which evaluates under ``torch.no_grad`` wherever it does not differentiate), so it can only make a
method look dearer, never cheaper. Forwards outside a block are not counted; blocks nest (an inner
block's passes count in the outer one too).

**Profiles.** Code may name what it is doing with ``with phase("line-search"): ...``; every open
counter then also adds the passes to ``by_phase[name]`` (the innermost phase's name when phases
nest) and the seconds spent to ``seconds_by_phase[name]`` (exclusive: an inner phase's seconds are
not its outer phase's). Passes outside any phase go to ``"other"``. A phase with no counter open
costs one ``perf_counter`` call.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

__all__ = ["SamplePasses", "count_forward", "count_sample_passes", "not_counted", "phase", "track"]


@dataclasses.dataclass(eq=False)
class SamplePasses:
    """Sample-passes counted so far (module docstring): ``forward`` and ``backward``."""

    forward: int = 0
    backward: int = 0
    by_phase: dict[str, int] = dataclasses.field(default_factory=dict)
    """``forward + backward`` per named phase (module docstring, Profiles)."""
    seconds_by_phase: dict[str, float] = dataclasses.field(default_factory=dict)
    """Exclusive wall seconds per named phase."""

    @property
    def total(self) -> int:
        """``forward + backward``: the cost the benchmarks compare."""
        return self.forward + self.backward

    def to_dict(self) -> dict[str, int]:
        return {"forward": self.forward, "backward": self.backward, "total": self.total}

    def profile(self) -> dict[str, dict[str, float]]:
        """``{phase: {"passes", "seconds"}}``, dearest phase first."""
        names = sorted(
            set(self.by_phase) | set(self.seconds_by_phase), key=lambda n: -self.by_phase.get(n, 0)
        )
        return {
            n: {"passes": self.by_phase.get(n, 0), "seconds": self.seconds_by_phase.get(n, 0.0)}
            for n in names
        }


_OPEN: list[SamplePasses] = []
_PHASES: list[list[Any]] = []  # [name, started, seconds of inner phases]


def count_forward(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
    """Forward hook: add the batch size of ``inputs[0]`` to every open counter (module docstring)."""
    if not _OPEN or not inputs or not isinstance(inputs[0], torch.Tensor) or inputs[0].dim() == 0:
        return
    n = int(inputs[0].shape[0])
    differentiated = torch.is_grad_enabled()
    name = _PHASES[-1][0] if _PHASES else "other"
    cost = 2 * n if differentiated else n
    for counter in _OPEN:
        counter.forward += n
        if differentiated:
            counter.backward += n
        counter.by_phase[name] = counter.by_phase.get(name, 0) + cost


def track(model: nn.Module) -> nn.Module:
    """Attach :func:`count_forward` to ``model`` (once) and return it."""
    if not getattr(model, "_fedforget_counted", False):
        model.register_forward_hook(count_forward)
        model._fedforget_counted = True  # type: ignore[assignment]
    return model


@contextlib.contextmanager
def count_sample_passes() -> Iterator[SamplePasses]:
    """``with count_sample_passes() as passes: ...`` counts the sample-passes of every tracked model
    inside the block into ``passes``."""
    counter = SamplePasses()
    _OPEN.append(counter)
    try:
        yield counter
    finally:
        del _OPEN[next(i for i, c in enumerate(_OPEN) if c is counter)]


@contextlib.contextmanager
def not_counted() -> Iterator[None]:
    """Forwards inside this block count in no open counter (e.g. a benchmark's own measurements
    taken in the middle of the work it counts)."""
    saved = list(_OPEN)
    _OPEN.clear()
    try:
        yield
    finally:
        _OPEN[:] = saved


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    """Attribute the passes and (exclusive) seconds inside this block to ``name`` in every open
    counter (module docstring, Profiles)."""
    entry: list[Any] = [name, time.perf_counter(), 0.0]
    _PHASES.append(entry)
    try:
        yield
    finally:
        _PHASES.pop()
        elapsed = time.perf_counter() - entry[1]
        if _PHASES:
            _PHASES[-1][2] += elapsed
        for counter in _OPEN:
            counter.seconds_by_phase[name] = counter.seconds_by_phase.get(name, 0.0) + elapsed - entry[2]
