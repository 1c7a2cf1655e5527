"""The server's one decoder per reply type: a device's reply becomes a typed value or a ProtocolError.

Every reply a device sends is decoded here before the server reads any of it, so a malformed reply
(a missing record or key, lists of unequal length, a wrong type, a number that is not finite, an
id judged that was not asked for) is one :class:`ProtocolError` with a one-line reason, never a
``KeyError`` deep in the server. The server treats it exactly like a failed node: the reason goes
into ``metrics.jsonl`` (``node-failed`` / ``reply-rejected`` / ``mask-rejected`` /
``update-rejected``) and the run goes on.

The decoders check the *form* of a reply. What its values mean is checked by their users: a mask's
and an update's size (``server/validation.py``), whether a partition is the node's
(``server/ledger.py``, the partition binding), whether a request names the partition's own samples
(``server/evaluator.py``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Collection, Mapping
from typing import Any, TypeVar

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord

from protocol import messages as m

__all__ = [
    "JudgeReply",
    "ProtocolError",
    "ReceiptAck",
    "ReportedRequest",
    "RequestsReply",
    "TrainReply",
    "UnlearnReply",
    "decode_judge",
    "decode_receipt_ack",
    "decode_requests",
    "decode_train",
    "decode_unlearn",
]

MAX_REASON = 300


class ProtocolError(ValueError):
    """A reply that does not follow the wire protocol; ``str(error)`` is a one-line reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(" ".join(str(reason).split())[:MAX_REASON])


@dataclasses.dataclass(frozen=True)
class TrainReply:
    """``train``: the locally trained model and the numbers FedAvg weighs it by."""

    state: dict[str, np.ndarray]
    num_examples: int
    train_loss: float
    client_seconds: float
    partition: int


@dataclasses.dataclass(frozen=True)
class UnlearnReply:
    """``train.unlearn``: the device's delta ``m`` over trainable parameters, and its numbers.

    ``guards``: the ``guard-*`` metrics (the accuracies the device's guard is relative to), sent
    back to the device in the attempt's later rounds.
    """

    mask: dict[str, np.ndarray]
    metrics: dict[str, float]
    client_seconds: float
    partition: int
    guards: dict[str, float]
    nbytes: int


@dataclasses.dataclass(frozen=True)
class JudgeReply:
    """``query.judge``: the device's calibration histograms and, when asked, its forget set's bins."""

    partition: int
    calibration: Any
    """A :class:`fedforget.judge.ClientCalibration` (counts per bin, per attack)."""
    ids: np.ndarray
    """The forget samples' ids (empty when no forget set was asked)."""
    bins: dict[str, np.ndarray]
    """Per attack, the bin of each forget sample, in the order of ``ids``."""
    num_forget: float
    metrics: dict[str, float]


@dataclasses.dataclass(frozen=True)
class ReportedRequest:
    """One withdrawal request as the device reports it."""

    request_id: str
    grain: str
    state: str
    ids: np.ndarray


@dataclasses.dataclass(frozen=True)
class RequestsReply:
    """``query.requests``: the partition the node claims and every request its device holds."""

    partition: int
    requests: tuple[ReportedRequest, ...]


@dataclasses.dataclass(frozen=True)
class ReceiptAck:
    """``query.receipt``: the request ids whose receipt the device stored."""

    request_ids: tuple[str, ...]


# ---------------------------------------------------------------------------------------- helpers
T = TypeVar("T")


def _decoder(what: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Whatever goes wrong while decoding becomes one ProtocolError naming the reply type."""

    def wrap(decode: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(decode)
        def decoded(reply: Message, **expected: Any) -> T:
            try:
                if reply.has_error():
                    raise ProtocolError("an error reply has nothing to decode")
                if not reply.has_content():
                    raise ProtocolError("the reply has no content")
                return decode(reply, **expected)
            except ProtocolError as error:
                raise ProtocolError(f"{what} reply: {error}") from None
            except Exception as error:  # noqa: BLE001 - any other failure is a malformed reply too
                raise ProtocolError(f"{what} reply: malformed ({type(error).__name__}: {error})") from None

        return decoded

    return wrap


def _record(reply: Message, key: str, kind: type) -> Any:
    content = reply.content
    if key not in content:
        raise ProtocolError(f"no {key!r} record")
    record = content[key]
    if not isinstance(record, kind):
        raise ProtocolError(f"{key!r} is a {type(record).__name__}, expected a {kind.__name__}")
    return record


def _only(reply: Message, allowed: Collection[str]) -> None:
    extra = sorted(set(reply.content.keys()) - set(allowed))
    if extra:
        raise ProtocolError(f"unexpected records {extra[:5]}")


def _number(record: Mapping[str, Any], key: str, *, finite: bool = True) -> float:
    if key not in record:
        raise ProtocolError(f"no {key!r}")
    value = record[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProtocolError(f"{key!r} is {type(value).__name__}, expected a number")
    value = float(value)
    if finite and not math.isfinite(value):
        raise ProtocolError(f"{key!r} = {value} is not finite")
    return value


def _count(record: Mapping[str, Any], key: str) -> int:
    value = _number(record, key)
    if value < 0 or not value.is_integer():
        raise ProtocolError(f"{key!r} = {value} is not a whole number >= 0")
    return int(value)


def _strings(record: Mapping[str, Any], key: str) -> list[str]:
    if key not in record:
        raise ProtocolError(f"no {key!r}")
    value = record[key]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ProtocolError(f"{key!r} is not a list of strings")
    return list(value)


def _ints(record: Mapping[str, Any], key: str) -> np.ndarray:
    if key not in record:
        raise ProtocolError(f"no {key!r}")
    value = record[key]
    if not isinstance(value, list) or any(isinstance(v, bool) or not isinstance(v, int) for v in value):
        raise ProtocolError(f"{key!r} is not a list of integers")
    return np.asarray(value, dtype=np.int64).reshape(-1)


def _arrays(record: ArrayRecord, key: str) -> tuple[dict[str, np.ndarray], int]:
    out, nbytes = {}, 0
    for name in record:
        try:
            array = np.asarray(record[name].numpy())
        except Exception as error:  # noqa: BLE001 - bytes that are no array
            raise ProtocolError(f"{key}[{name!r}] does not decode ({type(error).__name__})") from None
        out[name] = array
        nbytes += array.nbytes
    return out, nbytes


def _metrics(record: MetricRecord) -> dict[str, float]:
    out = {}
    for key in record:
        value = record[key]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ProtocolError(f"metric {key!r} is {type(value).__name__}, expected a number")
        out[str(key)] = float(value)
    return out


# ---------------------------------------------------------------------------------------- decoders
@_decoder(m.TRAIN)
def decode_train(reply: Message) -> TrainReply:
    """``arrays`` (the trained state) and ``metrics`` with whole ``num-examples`` >= 0, finite
    ``train-loss`` and ``client-seconds`` >= 0, and ``partition-id``; no other record."""
    _only(reply, (m.ARRAYS, m.METRICS))
    state, _ = _arrays(_record(reply, m.ARRAYS, ArrayRecord), m.ARRAYS)
    metrics = _record(reply, m.METRICS, MetricRecord)
    seconds = _number(metrics, m.CLIENT_SECONDS)
    if seconds < 0:
        raise ProtocolError(f"{m.CLIENT_SECONDS!r} = {seconds} is negative")
    return TrainReply(
        state=state,
        num_examples=_count(metrics, m.NUM_EXAMPLES),
        train_loss=_number(metrics, m.TRAIN_LOSS),
        client_seconds=seconds,
        partition=_count(metrics, m.PARTITION_ID),
    )


@_decoder(m.UNLEARN)
def decode_unlearn(reply: Message) -> UnlearnReply:
    """``mask`` (name -> delta), ``metrics`` with finite ``client-seconds`` >= 0, ``partition-id``
    and finite ``guard-*`` values; optional ``info``."""
    _only(reply, (m.MASK, m.METRICS, m.INFO))
    mask, nbytes = _arrays(_record(reply, m.MASK, ArrayRecord), m.MASK)
    metrics = _metrics(_record(reply, m.METRICS, MetricRecord))
    seconds = _number(metrics, m.CLIENT_SECONDS)
    if seconds < 0:
        raise ProtocolError(f"{m.CLIENT_SECONDS!r} = {seconds} is negative")
    guards = {k: v for k, v in metrics.items() if k.startswith("guard-")}
    bad = sorted(k for k, v in guards.items() if not math.isfinite(v))
    if bad:
        raise ProtocolError(f"guard metrics {bad[:3]} are not finite")
    return UnlearnReply(mask, metrics, seconds, _count(metrics, m.PARTITION_ID), guards, nbytes)


@_decoder(m.QUERY_JUDGE)
def decode_judge(
    reply: Message,
    *,
    attacks: Collection[str],
    expected_ids: np.ndarray | None = None,
    expected_partition: int | None = None,
) -> JudgeReply:
    """``calibration`` (exactly ``members/<a>`` and ``nonmembers/<a>`` for every attack ``a`` of the
    judge: :data:`fedforget.judge.NUM_BINS` non-negative integer counts each), ``metrics``
    (``partition-id``, ``num-forget`` >= 0, the :data:`~protocol.messages.JUDGE_METRICS`) and, with
    ``expected_ids``, ``forget``: ``ids`` covering exactly the asked ids once each and, per attack, one
    bin in ``[0, NUM_BINS)`` per id. With ``expected_partition`` the reply must be that partition's."""
    from fedforget.judge import NUM_BINS, ClientCalibration

    _only(reply, (m.CALIBRATION, m.FORGET, m.METRICS))
    counts, _ = _arrays(_record(reply, m.CALIBRATION, ArrayRecord), m.CALIBRATION)
    wanted = {f"{side}/{a}" for side in ("members", "nonmembers") for a in attacks}
    if set(counts) != wanted:
        raise ProtocolError(f"calibration holds {sorted(counts)[:4]}, expected {sorted(wanted)[:4]}")
    for key, value in counts.items():
        if value.shape != (NUM_BINS,) or value.dtype.kind not in "iu" or (value < 0).any():
            raise ProtocolError(f"calibration {key!r} is not {NUM_BINS} non-negative integer counts")
    calibration = ClientCalibration.from_arrays(counts)
    metrics = _record(reply, m.METRICS, MetricRecord)
    partition = _count(metrics, m.PARTITION_ID)
    if expected_partition is not None and partition != expected_partition:
        raise ProtocolError(f"answers for partition {partition}, asked partition {expected_partition}")
    values = {key: _number(metrics, key, finite=False) for key in m.JUDGE_METRICS}
    ids = np.empty(0, dtype=np.int64)
    bins: dict[str, np.ndarray] = {}
    if expected_ids is not None and len(expected_ids):
        forget, _ = _arrays(_record(reply, m.FORGET, ArrayRecord), m.FORGET)
        if set(forget) != {m.IDS, *attacks}:
            raise ProtocolError(f"forget holds {sorted(forget)[:4]}, expected ids and {sorted(attacks)}")
        ids = np.asarray(forget[m.IDS]).reshape(-1)
        if ids.dtype.kind not in "iu":
            raise ProtocolError("forget ids are not integers")
        ids = ids.astype(np.int64)
        if np.unique(ids).size != ids.size:
            raise ProtocolError("some forget ids are scored twice")
        asked = np.unique(np.asarray(expected_ids, dtype=np.int64))
        missing, extra = np.setdiff1d(asked, ids), np.setdiff1d(ids, asked)
        if missing.size or extra.size:
            raise ProtocolError(
                f"scores other ids than asked ({missing.size} missing, e.g. {missing[:3].tolist()}; "
                f"{extra.size} not asked, e.g. {extra[:3].tolist()})"
            )
        for attack in attacks:
            b = np.asarray(forget[attack]).reshape(-1)
            if b.size != ids.size or b.dtype.kind not in "iu" or b.min() < 0 or b.max() >= NUM_BINS:
                raise ProtocolError(f"forget bins of {attack!r} are not one bin in [0, {NUM_BINS}) per id")
            bins[attack] = b.astype(np.int64)
    return JudgeReply(
        partition=partition,
        calibration=calibration,
        ids=ids,
        bins=bins,
        num_forget=float(_count(metrics, m.NUM_FORGET)),
        metrics=values,
    )


@_decoder(m.QUERY_REQUESTS)
def decode_requests(reply: Message) -> RequestsReply:
    """``requests`` (``partition-id`` >= 0; ``request-ids``, ``grains``, ``states``: string lists of
    one length, request ids unique, states known) and ``ids`` (request id -> integer list)."""
    _only(reply, (m.REQUESTS, m.IDS))
    summary = _record(reply, m.REQUESTS, ConfigRecord)
    ids = _record(reply, m.IDS, ConfigRecord)
    partition = _count(summary, m.PARTITION_ID)
    rids, grains, states = (_strings(summary, k) for k in (m.REQUEST_IDS, m.GRAINS, m.STATES))
    if not len(rids) == len(grains) == len(states):
        raise ProtocolError(
            f"{len(rids)} request ids, {len(grains)} grains and {len(states)} states: lists of unequal length"
        )
    if len(set(rids)) != len(rids):
        raise ProtocolError("a request id is reported twice")
    unknown = sorted(set(states) - set(m.REQUEST_STATES))
    if unknown:
        raise ProtocolError(f"unknown request states {unknown[:3]}")
    requests = tuple(
        ReportedRequest(rid, grain, state, _ints(ids, rid))
        for rid, grain, state in zip(rids, grains, states, strict=True)
    )
    return RequestsReply(partition, requests)


@_decoder(m.QUERY_RECEIPT)
def decode_receipt_ack(reply: Message) -> ReceiptAck:
    """``done`` with ``request-ids``: the requests whose receipt the device stored."""
    _only(reply, (m.DONE,))
    done = _record(reply, m.DONE, ConfigRecord)
    return ReceiptAck(tuple(_strings(done, m.REQUEST_IDS)))
