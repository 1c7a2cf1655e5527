"""Unlearning baselines: the methods Forsaken is compared with (no Flower imports).

Federated methods take the trained federation (:class:`Original`, from :func:`train_original`) and
``forget`` (partition id -> withdrawn global ids) and return an :class:`UnlearnResult`::

    from fedforget import baselines
    result, original = baselines.train_original(config, federaser_every=1)
    out = baselines.get("pga").run(original, {0: ids})
    out.state_dict, out.seconds, out.client_seconds, out.bytes_sent, out.storage_bytes, out.history

=================  ===========  ===============================================================
name               kind         method
=================  ===========  ===============================================================
retrain            federated    FedAvg from scratch without the data (exact; the gold standard)
finetune           federated    more FedAvg rounds on the remaining data
gradient-ascent    federated    bounded ascent on the forget set (client delta), then repair rounds
pga                federated    projected gradient ascent around w_ref (Halimi et al. 2022) + repair
federaser          federated    calibration of stored updates (Liu et al., IWQoS 2021)
sisa               centralized  shards x slices with checkpoints (Bourtoule et al., S&P 2021)
amnesiac           centralized  subtract recorded batch updates (Graves et al., AAAI 2021) + repair
=================  ===========  ===============================================================

Centralized methods have their own training (:func:`sisa_train`, :func:`amnesiac_train`); their
``run`` is the unlearning step (:func:`sisa_unlearn`, :func:`amnesiac_unlearn`).
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable

from fedforget.baselines.amnesiac import AmnesiacRecord, amnesiac_train, amnesiac_unlearn, subtract_updates
from fedforget.baselines.base import Forget, Original, UnlearnResult, add_delta, check_forget
from fedforget.baselines.federaser import FedEraserStore, calibrate_update, calibration_step, federaser
from fedforget.baselines.finetune import finetune
from fedforget.baselines.gradient_ascent import AscentConfig, ascent_delta, gradient_ascent
from fedforget.baselines.pga import PGAConfig, pga, pga_delta, reference_state
from fedforget.baselines.retrain import retrain
from fedforget.baselines.sisa import SisaConfig, SisaEnsemble, SisaModel, sisa_train, sisa_unlearn
from fedforget.baselines.training import train_original
from fedforget.config import RunConfig

__all__ = [
    "KINDS",
    "METHODS",
    "AmnesiacRecord",
    "AscentConfig",
    "FedEraserStore",
    "Forget",
    "Method",
    "Original",
    "PGAConfig",
    "RunConfig",
    "SisaConfig",
    "SisaEnsemble",
    "SisaModel",
    "UnlearnResult",
    "add_delta",
    "amnesiac_train",
    "amnesiac_unlearn",
    "ascent_delta",
    "calibrate_update",
    "calibration_step",
    "check_forget",
    "federaser",
    "finetune",
    "get",
    "gradient_ascent",
    "pga",
    "pga_delta",
    "reference_state",
    "retrain",
    "sisa_train",
    "sisa_unlearn",
    "subtract_updates",
    "train_original",
]

KINDS = ("federated", "centralized")


@dataclasses.dataclass(frozen=True)
class Method:
    """One registered method: its name, kind, unlearning function, a one-line summary and citation."""

    name: str
    kind: str
    run: Callable[..., UnlearnResult]
    summary: str
    citation: str
    client_side: bool = False
    """True when the withdrawing client computes a delta the server adds (as a Forsaken mask)."""


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("retrain", "federated", retrain, "FedAvg from scratch without the withdrawn data", "-"),
        Method("finetune", "federated", finetune, "k more FedAvg rounds on the remaining data", "-"),
        Method(
            "gradient-ascent",
            "federated",
            gradient_ascent,
            "bounded loss ascent on the forget set, then FedAvg repair rounds",
            "standard baseline; PGA (Halimi et al. 2022) without the projection",
            client_side=True,
        ),
        Method(
            "pga",
            "federated",
            pga,
            "projected gradient ascent in a ball around the other clients' average, then repair",
            "Halimi, Kadhe, Rawat, Baracaldo, arXiv 2207.05521, 2022",
            client_side=True,
        ),
        Method(
            "federaser",
            "federated",
            federaser,
            "calibration training that rescales new update directions by stored update norms",
            "Liu, Ma, Yang, Wang, Liu, IEEE/ACM IWQoS 2021",
        ),
        Method(
            "sisa",
            "centralized",
            sisa_unlearn,
            "retrain the affected shard from its last clean slice checkpoint",
            "Bourtoule et al., IEEE S&P 2021",
        ),
        Method(
            "amnesiac",
            "centralized",
            amnesiac_unlearn,
            "subtract the recorded updates of batches with forgotten samples, then repair",
            "Graves, Nagisetty, Ganesh, AAAI 2021",
        ),
    )
}
"""Every baseline by name (the names ``unlearn-method`` would take)."""


def get(name: str) -> Method:
    """The method called ``name`` (``_`` and ``-`` are the same); ValueError naming the known ones."""
    if not isinstance(name, str):
        raise ValueError(f"method name must be a string, got {type(name).__name__}")
    key = name.strip().lower().replace("_", "-")
    if key in METHODS:
        return METHODS[key]
    close = difflib.get_close_matches(key, list(METHODS), n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise ValueError(f"unknown unlearning method '{name}'.{hint} Known methods: {', '.join(METHODS)}.")
