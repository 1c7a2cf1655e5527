"""SISA training and unlearning (centralized, one data owner): Bourtoule, Chandrasekaran,
Choquette-Choo, Jia, Travers, Zhang, Lie and Papernot, "Machine Unlearning" (IEEE S&P 2021).

**Training.** The data ``D`` is split (seeded) into ``S`` disjoint **shards** ``D_1 .. D_S``, each
shard into ``R`` disjoint **slices** ``D_{s,1} .. D_{s,R}``. One model per shard is trained
incrementally: for slice ``r = 1 .. R`` it trains ``epochs_per_slice`` epochs on
``D_{s,1} u .. u D_{s,r}`` (seed ``(seed, s, r)``) from the checkpoint of slice ``r-1``, and the
checkpoint ``c_{s,r}`` is stored (``c_{s,0}`` is the shard's initial model). The ensemble predicts
with the mean of the members' softmax outputs (``aggregate="mean"``) or a majority vote
(``aggregate="vote"``); :class:`SisaEnsemble` returns the log of that distribution as its logits.

**Unlearning** sample ``u`` in slice ``r`` of shard ``s``: restore ``c_{s,r-1}`` (the last clean
checkpoint) and redo slices ``r .. R`` of shard ``s`` without ``u`` (same seeds). Every other shard
is untouched. The result is exactly the model SISA would have trained without ``u``. Storage:
``S (R + 1)`` model copies.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from fedforget import training
from fedforget.baselines.base import UnlearnResult, check_positive
from fedforget.federated import state_nbytes

__all__ = ["AGGREGATES", "SisaConfig", "SisaEnsemble", "SisaModel", "sisa_train", "sisa_unlearn"]

AGGREGATES = ("mean", "vote")


@dataclasses.dataclass(frozen=True)
class SisaConfig:
    """Shards, slices, epochs per slice and the SGD recipe (``fedforget.training.train``)."""

    shards: int = 4
    slices: int = 3
    epochs_per_slice: int = 1
    learning_rate: float = 0.05
    batch_size: int = 16
    momentum: float = 0.9
    weight_decay: float = 0.0
    seed: int = 0
    aggregate: str = "mean"

    def validate(self) -> None:
        for name in ("shards", "slices", "epochs_per_slice", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        check_positive("learning_rate", self.learning_rate)
        check_positive("weight_decay", self.weight_decay, allow_zero=True)
        if self.aggregate not in AGGREGATES:
            raise ValueError(f"aggregate must be one of {AGGREGATES}, got {self.aggregate!r}")


class SisaEnsemble(nn.Module):
    """The shard models; ``forward`` = log of the mean softmax (or of the vote shares) of the members."""

    loss_name = "cross_entropy"

    def __init__(self, members: list[nn.Module], aggregate: str = "mean") -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.aggregate = aggregate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.stack([member(x) for member in self.members])
        if self.aggregate == "vote":
            votes = nn.functional.one_hot(logits.argmax(dim=2), logits.shape[2]).to(logits.dtype)
            share = votes.mean(dim=0)
        else:
            share = torch.softmax(logits, dim=2).mean(dim=0)
        return torch.log(share.clamp_min(1e-12))


@dataclasses.dataclass(eq=False)
class SisaModel:
    """A trained SISA ensemble with what it needs to unlearn: data, assignment, checkpoints."""

    config: SisaConfig
    factory: Callable[[int], nn.Module]
    ids: np.ndarray
    x: np.ndarray
    y: np.ndarray
    shard: np.ndarray
    slice: np.ndarray
    checkpoints: list[list[dict[str, torch.Tensor]]]
    """``checkpoints[s][r]`` = state after slice ``r`` (``r = 0``: the initial model, then 1 .. R)."""
    removed: frozenset[int]
    seconds: float

    @property
    def ensemble(self) -> SisaEnsemble:
        members = []
        for s in range(self.config.shards):
            member = self.factory(self.config.seed)
            member.load_state_dict(self.checkpoints[s][-1])
            members.append(member)
        return SisaEnsemble(members, self.config.aggregate)

    @property
    def storage_bytes(self) -> int:
        return sum(state_nbytes(c) for per in self.checkpoints for c in per)

    def slice_data(self, s: int, r: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(ids, x, y)`` of ``D_{s,1} u .. u D_{s,r}`` minus the removed ids (``r`` from 1)."""
        keep = (self.shard == s) & (self.slice < r) & ~np.isin(self.ids, list(self.removed))
        return self.ids[keep], self.x[keep], self.y[keep]


def _seed(config: SisaConfig, s: int, r: int) -> int:
    return config.seed * 1_000_003 + s * 1_009 + r


def _train_slices(model: SisaModel, s: int, first: int) -> tuple[float, int]:
    """Retrain shard ``s`` from checkpoint ``first - 1`` through slice ``R``; returns (seconds, slices)."""
    config = model.config
    member = model.factory(config.seed)
    member.load_state_dict(model.checkpoints[s][first - 1])
    seconds = 0.0
    for r in range(first, config.slices + 1):
        _, x, y = model.slice_data(s, r)
        if len(y):
            seconds += training.train(
                member,
                x,
                y,
                epochs=config.epochs_per_slice,
                learning_rate=config.learning_rate,
                batch_size=config.batch_size,
                momentum=config.momentum,
                weight_decay=config.weight_decay,
                seed=_seed(config, s, r),
            ).seconds
        model.checkpoints[s][r] = {k: v.detach().clone() for k, v in member.state_dict().items()}
    return seconds, config.slices - first + 1


def _check_data(x: np.ndarray, y: np.ndarray, ids: np.ndarray) -> None:
    if not len(x) == len(y) == len(ids):
        raise ValueError(f"x, y and ids must have the same length, got {len(x)}, {len(y)}, {len(ids)}")
    if len(np.unique(ids)) != len(ids):
        raise ValueError("ids must be unique (one global id per training sample)")


def sisa_train(
    factory: Callable[[int], nn.Module], x: np.ndarray, y: np.ndarray, ids: np.ndarray, config: SisaConfig
) -> SisaModel:
    """Train the SISA ensemble on ``(x, y)`` with sample ids ``ids`` (module docstring).

    ``factory(seed)`` returns a freshly initialised model (shard ``s`` starts from ``factory(seed + s)``).
    """
    config.validate()
    ids = np.asarray(ids, dtype=np.int64)
    _check_data(x, y, ids)
    if len(ids) < config.shards * config.slices:
        raise ValueError(
            f"{len(ids)} samples cannot fill {config.shards} shards x {config.slices} slices: "
            "use fewer shards or slices"
        )
    order = np.random.default_rng(config.seed).permutation(len(ids))
    shard = np.empty(len(ids), dtype=np.int64)
    slice_ = np.empty(len(ids), dtype=np.int64)
    for s, part in enumerate(np.array_split(order, config.shards)):
        shard[part] = s
        for r, piece in enumerate(np.array_split(part, config.slices)):
            slice_[piece] = r
    start = time.perf_counter()
    checkpoints = []
    for s in range(config.shards):
        initial = {k: v.detach().clone() for k, v in factory(config.seed + s).state_dict().items()}
        checkpoints.append([initial] * (config.slices + 1))  # slots 1 .. R are filled by training
    model = SisaModel(
        config, factory, ids, np.asarray(x), np.asarray(y), shard, slice_, checkpoints, frozenset(), 0.0
    )
    for s in range(config.shards):
        _train_slices(model, s, 1)
    model.seconds = time.perf_counter() - start
    return model


def sisa_unlearn(model: SisaModel, forget_ids: np.ndarray) -> UnlearnResult:
    """Unlearn ``forget_ids``: retrain only the affected shards from their last clean checkpoint.

    ``model`` is not modified; the new :class:`SisaModel` is ``result.extra["sisa"]``.
    """
    forget_ids = np.asarray(forget_ids, dtype=np.int64)
    if forget_ids.size == 0:
        raise ValueError("forget_ids is empty: name at least one training id to unlearn")
    unknown = np.setdiff1d(forget_ids, model.ids)
    if unknown.size:
        raise ValueError(f"ids not in this SISA model's training data: {unknown[:5].tolist()}")
    already = sorted(set(forget_ids.tolist()) & model.removed)
    if already:
        raise ValueError(f"ids already unlearned: {already[:5]}")
    new = dataclasses.replace(
        model,
        checkpoints=[list(per) for per in model.checkpoints],
        removed=model.removed | frozenset(forget_ids.tolist()),
    )
    position = np.searchsorted(model.ids, forget_ids, sorter=np.argsort(model.ids))
    where = np.argsort(model.ids)[position]
    affected: dict[int, int] = {}
    for s, r in zip(model.shard[where], model.slice[where], strict=True):
        affected[int(s)] = min(affected.get(int(s), model.config.slices), int(r) + 1)
    start = time.perf_counter()
    compute, slices = 0.0, 0
    history: list[dict[str, Any]] = []
    for s, first in sorted(affected.items()):
        seconds, count = _train_slices(new, s, first)
        compute += seconds
        slices += count
        history.append({"shard": s, "from-slice": first, "slices-retrained": count, "seconds": seconds})
    ensemble = new.ensemble
    return UnlearnResult(
        method="sisa",
        state_dict={k: v.detach().clone() for k, v in ensemble.state_dict().items()},
        seconds=time.perf_counter() - start,
        client_seconds=compute,
        bytes_sent=0,
        storage_bytes=new.storage_bytes,
        history=history,
        extra={"sisa": new, "shards-retrained": len(affected), "slices-retrained": slices},
    )
