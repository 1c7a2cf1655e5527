"""One bad device cannot break the server (issue 15, defects 1-4).

The server loop runs against the real ClientApp over ``tests/inprocess.py``; ``tamper`` rewrites one
device's replies the way a broken or malicious device could. Every run must finish, the bad reply
must be on record (``metrics.jsonl``), and nothing of it may reach the model, the ledger or a receipt.
Bundled ``digits`` data only.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedforget.client_data import ClientData
from fedforget.config import RunConfig
from protocol import messages as wire
from protocol.replies import (
    ProtocolError,
    decode_judge,
    decode_receipt_ack,
    decode_requests,
    decode_train,
    decode_unlearn,
)
from server.console import RoundTable
from server.evaluator import ForgettingEvaluator
from server.loop import run_federated_training
from server.rounds import make_strategy, train_round
from server.setup import prepare_run
from server.validation import UpdateRejected, parameter_names, validate_update
from tests.inprocess import InProcessGrid


@pytest.fixture(autouse=True)
def _identity() -> None:
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 0


def _run_config(tmp: Path, **changes: object) -> dict:
    from simulations.run import resolve_run_config

    values = {
        "num-clients": 2,
        "num-rounds": 2,
        "local-epochs": 1,
        "num-shadows": 2,
        "shadow-epochs": 2,
        "unlearn-rounds": 1,
        "forsaken-steps": 3,
        "withdrawals": "2:0:samples:0.1",
        "run-dir": str(tmp / "runs"),
        **changes,
    }
    return resolve_run_config(values, None)


def _run(tmp: Path, tamper: Callable[[Message], Message], **changes: object) -> tuple[Any, list[dict]]:
    """A whole run against a tampering grid; it must finish."""
    run_config = _run_config(tmp, **changes)
    run = prepare_run(run_config)
    grid = InProcessGrid(run_config, tmp, tamper)
    tamper.grid = grid  # type: ignore[attr-defined]
    run_federated_training(grid, run)
    rows = run.record.metrics()
    assert rows[-1]["event"] == "run-finished"
    return run, rows


# ---------------------------------------------------------------------------------------- defect 1
@pytest.mark.parametrize("max_mask_ratio", [None, 1.0])
def test_a_mask_that_zeroes_the_model_never_commits(tmp_path: Path, max_mask_ratio: float | None) -> None:
    """Device 0 answers ``m = -w``. With the default ratio the mask is rejected; with the old default
    (1: the norm check passes) the health check refuses the zero model. Either way nothing commits:
    the request stays open, no receipt, and the run trains on from a working model."""

    def cancel_the_model(reply: Message) -> Message:
        if reply.metadata.message_type == wire.UNLEARN and reply.metadata.src_node_id == 100:
            sent = cancel_the_model.grid.sent[-1].content[wire.ARRAYS]  # type: ignore[attr-defined]
            honest = reply.content[wire.MASK]
            reply.content[wire.MASK] = ArrayRecord({k: Array(-sent[k].numpy()) for k in honest})
        return reply

    changes = {} if max_mask_ratio is None else {"max-mask-ratio": max_mask_ratio}
    run, rows = _run(tmp_path, cancel_the_model, **changes)
    failed = [r for r in rows if r.get("event") == "attempt-failed"]
    if max_mask_ratio is None:
        assert run.config.max_mask_ratio < 1
        assert any(r.get("event") == "mask-rejected" and "max-mask-ratio" in r["reason"] for r in rows)
    else:
        assert (
            failed and "unhealthy model" in failed[0]["reason"] and "max-accuracy-drop" in failed[0]["reason"]
        )
    (entry,) = run.ledger.entries()
    assert entry.state == "received" and entry.receipt is None and entry.attempts == 1
    assert "after-unlearning" not in run.record.named_checkpoints()
    completed, state, applied = run.record.load_resume_point()
    weight_norm = math.sqrt(sum(float(v.double().square().sum()) for v in state.values()))
    assert completed == 2 and weight_norm > 1.0 and applied == {}
    final = [r for r in rows if r["phase"] == "train"][-1]
    assert final["failures"] == 0 and final["test-accuracy"] > 0.5


# ---------------------------------------------------------------------------------------- defect 2
def _unequal_lists(reply: Message) -> Message:
    if reply.metadata.message_type == wire.QUERY_REQUESTS and reply.metadata.src_node_id == 100:
        summary = dict(reply.content[wire.REQUESTS])
        summary.update({wire.REQUEST_IDS: ["x", "y"], wire.GRAINS: ["samples"]})
        reply.content[wire.REQUESTS] = ConfigRecord(summary)
    return reply


def _judge_reply_missing_an_id(reply: Message) -> Message:
    if (
        reply.metadata.message_type == wire.QUERY_JUDGE
        and reply.metadata.src_node_id == 100
        and wire.FORGET in reply.content
    ):
        forget = reply.content[wire.FORGET]
        reply.content[wire.FORGET] = ArrayRecord(
            {k: Array(np.ascontiguousarray(forget[k].numpy()[1:])) for k in forget}
        )
    return reply


def _unlearn_without_metrics(reply: Message) -> Message:
    if reply.metadata.message_type == wire.UNLEARN:
        del reply.content[wire.METRICS]
    return reply


def _no_examples(reply: Message) -> Message:
    if reply.metadata.message_type == wire.TRAIN:
        metrics = dict(reply.content[wire.METRICS])
        reply.content[wire.METRICS] = MetricRecord({**metrics, wire.NUM_EXAMPLES: 0})
    return reply


def _same_partition_twice() -> Callable[[Message], Message]:
    """Node 101 repeats node 100's ``query.requests`` reply (partition 0 and its request)."""
    seen: dict[str, RecordDict] = {}

    def copy_partition_0(reply: Message) -> Message:
        if reply.metadata.message_type == wire.QUERY_REQUESTS:
            if reply.metadata.src_node_id == 100:
                seen["last"] = copy.deepcopy(reply.content)
            else:
                reply.content = copy.deepcopy(seen["last"])
        return reply

    return copy_partition_0


@pytest.mark.parametrize(
    ("tamper", "event", "reason"),
    [
        (_unequal_lists, "reply-rejected", "lists of unequal length"),
        (_judge_reply_missing_an_id, "reply-rejected", "scores other ids than asked (1 missing"),
        (_unlearn_without_metrics, "mask-rejected", "no 'metrics' record"),
        (_same_partition_twice(), "claim-refused", "bound to node 100"),
        (_no_examples, "round-without-data", None),
    ],
    ids=[
        "unequal-lists",
        "membership-missing-id",
        "unlearn-without-metrics",
        "duplicate-claim",
        "zero-examples",
    ],
)
def test_a_malformed_or_duplicated_reply_is_logged_and_the_run_goes_on(
    tmp_path: Path, tamper: Callable[[Message], Message], event: str, reason: str | None
) -> None:
    run, rows = _run(tmp_path, tamper)
    logged = [r for r in rows if r.get("event") == event]
    assert logged, event
    if reason is not None:
        assert reason in logged[0]["reason"] and "\n" not in logged[0]["reason"]
    if event == "round-without-data":  # the model is kept, not divided by zero
        train = [r for r in rows if r["phase"] == "train"]
        assert len(logged) == len(train) == 2 and all(r["train-loss"] is None for r in train)  # NaN
        assert train[0]["test-accuracy"] == rows[0]["test-accuracy"]
    if event == "claim-refused":  # partition 0's request is unlearned once, for node 100
        (entry,) = run.ledger.entries()
        assert entry.state == "receipt-delivered" and entry.attempts == 1
        assert run.ledger.bindings() == {0: 100}
        assert all(r["node"] == 101 and r["partition"] == 0 for r in logged)


# ---------------------------------------------------------------------------------------- defect 3
def test_a_node_cannot_speak_for_another_nodes_partition(tmp_path: Path) -> None:
    """Node 101 says it is partition 0 and files 'forged-1' with partition 0's samples."""
    run_config = _run_config(tmp_path, withdrawals="")
    theirs = ClientData.for_partition(RunConfig.from_mapping(run_config), 0).train_ids[:4]

    def forge(reply: Message) -> Message:
        if reply.metadata.message_type == wire.QUERY_REQUESTS and reply.metadata.src_node_id == 101:
            reply.content[wire.REQUESTS] = ConfigRecord(
                {
                    wire.PARTITION_ID: 0,
                    wire.REQUEST_IDS: ["forged-1"],
                    wire.GRAINS: ["samples"],
                    wire.STATES: ["pending"],
                }
            )
            reply.content[wire.IDS] = ConfigRecord({"forged-1": [int(i) for i in theirs]})
        return reply

    run = prepare_run(run_config)
    run_federated_training(InProcessGrid(run_config, tmp_path, forge), run)
    rows = run.record.metrics()
    assert run.ledger.entries() == [] and run.ledger.bindings() == {0: 100}
    refused = [r for r in rows if r.get("event") == "claim-refused"]
    assert [(r["node"], r["partition"], r["bound-node"]) for r in refused] == [(101, 0, 100)] * 2
    assert [e["event"] for e in run.ledger.binding_events(0)] == ["bound", "refused", "refused"]


# ---------------------------------------------------------------------------------------- defect 4
class _WithBatchNorm(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 3)
        self.norm = torch.nn.BatchNorm1d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.linear(x))


@pytest.mark.parametrize(
    ("buffer", "value", "message"),
    [
        ("norm.running_var", -1e30, "variances <= 0"),
        ("norm.running_var", 0.0, "variances <= 0"),
        ("norm.running_mean", 3e38, "buffers by L2"),
        ("norm.num_batches_tracked", -7, "step counter"),
    ],
)
def test_batch_norm_buffers_are_checked(buffer: str, value: float, message: str) -> None:
    torch.manual_seed(0)
    model = _WithBatchNorm()
    model.train()
    model(torch.randn(16, 4))  # the buffers hold real statistics
    state = model.state_dict()
    honest = {k: v.numpy().copy() for k, v in state.items()}
    honest["norm.running_var"] *= 1.5
    validate_update(honest, state, parameter_names(model), 100.0, 10, max_examples=20)
    bad = {k: v.copy() for k, v in honest.items()}
    bad[buffer] = np.full_like(bad[buffer], value)
    with pytest.raises(UpdateRejected, match=message):
        validate_update(bad, state, parameter_names(model), 100.0, 10, max_examples=20)
    if buffer == "norm.running_var" and value < 0:  # what it would have done: NaN outputs
        model.load_state_dict({k: torch.as_tensor(v) for k, v in bad.items()})
        assert torch.isnan(model.eval()(torch.randn(4, 4))).any()


# ---------------------------------------------------------------------------------------- fuzzing
DECODERS: dict[str, Callable[..., Any]] = {
    wire.TRAIN: decode_train,
    wire.UNLEARN: decode_unlearn,
    wire.QUERY_REQUESTS: decode_requests,
    # the first judge query (round 1) is the loss attack alone, before the judge is fitted
    wire.QUERY_JUDGE: lambda reply: decode_judge(reply, attacks=("loss",)),
    wire.QUERY_RECEIPT: decode_receipt_ack,
}


@pytest.fixture(scope="module")
def honest(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One small run whose first honest reply of every type is kept (and the run and its grid)."""
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 0
    tmp = tmp_path_factory.mktemp("fuzz")
    replies: dict[str, Message] = {}

    def keep(reply: Message) -> Message:
        if not reply.has_error():
            replies.setdefault(reply.metadata.message_type, copy.deepcopy(reply))
        return reply

    run_config = _run_config(tmp)
    run = prepare_run(run_config)
    grid = InProcessGrid(run_config, tmp, keep)
    run_federated_training(grid, run)
    assert sorted(replies) == sorted(DECODERS)
    for kind, reply in replies.items():  # every honest reply decodes
        DECODERS[kind](reply)
    return {"replies": replies, "run": run, "grid": grid}


VALUES = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(max_size=5),
    st.lists(st.integers(-5, 2000), max_size=4),
    st.lists(st.text(max_size=3), max_size=3),
    st.lists(st.floats(), max_size=3),
)
ARRAYS = st.builds(
    lambda shape, dtype, fill: np.full(shape, fill).astype(dtype),
    st.lists(st.integers(0, 3), max_size=3).map(tuple),
    st.sampled_from([np.float32, np.float64, np.int64, np.bool_]),
    st.floats(allow_nan=True, allow_infinity=True, width=32),
)
MUTATION = st.tuples(
    st.sampled_from(["drop-record", "retype-record", "drop-key", "set-key", "add-record"]),
    st.integers(0, 50),
    st.text(min_size=1, max_size=12),
    VALUES,
    ARRAYS,
)


def _mutate(content: RecordDict, mutation: tuple) -> None:
    action, pick, name, value, array = mutation
    keys = sorted(content.keys())
    if action == "add-record" or not keys:
        content[f"x-{name}"] = ConfigRecord({"k": 1})
        return
    key = keys[pick % len(keys)]
    record = content[key]
    if action == "drop-record":
        del content[key]
    elif action == "retype-record":
        content[key] = MetricRecord({"k": 1.0}) if isinstance(record, ArrayRecord) else ArrayRecord({})
    elif isinstance(record, ArrayRecord):
        entries = sorted(record.keys())
        target = entries[pick % len(entries)] if entries and action == "drop-key" else name
        if action == "drop-key" and entries:
            del record[target]
        else:
            record[entries[pick % len(entries)] if entries and pick % 2 else name] = Array(array)
    else:
        entries = sorted(record.keys())
        if action == "drop-key" and entries:
            del record[entries[pick % len(entries)]]
        else:
            target = entries[pick % len(entries)] if entries and pick % 2 else name
            try:
                record[target] = value
            except (TypeError, ValueError):  # a value this record type cannot hold at all
                record[target] = float("nan") if isinstance(record, MetricRecord) else str(value)


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(kind=st.sampled_from(sorted(DECODERS)), mutations=st.lists(MUTATION, min_size=1, max_size=3))
def test_fuzzed_replies_decode_or_fail_with_one_protocol_error(
    honest: dict[str, Any], kind: str, mutations: list[tuple]
) -> None:
    """A mutated honest reply either decodes or raises one ProtocolError with a one-line reason; the
    ``query.requests`` and ``train`` ones also go through the server's own handling (poll, one FedAvg
    round) over the in-process grid, which must not raise."""
    content = copy.deepcopy(honest["replies"][kind].content)
    for mutation in mutations:
        _mutate(content, mutation)
    reply = copy.deepcopy(honest["replies"][kind])
    reply.content = content
    decoded_error = ""
    try:
        DECODERS[kind](reply)
    except ProtocolError as error:
        decoded_error = str(error)
        assert decoded_error and "\n" not in decoded_error
    if kind not in (wire.QUERY_REQUESTS, wire.TRAIN):
        return
    run, grid = honest["run"], honest["grid"]

    def replace(real: Message) -> Message:
        if real.metadata.message_type == kind and real.metadata.src_node_id == 100:
            real.content = copy.deepcopy(content)
        return real

    grid.tamper = replace
    logged = len(run.record.metrics())
    if kind == wire.QUERY_REQUESTS:
        ForgettingEvaluator(run).poll(grid, run.config.num_rounds)
    else:
        model = ArrayRecord(run.model.state_dict())
        table = RoundTable(run.record.path)
        train_round(grid, run, make_strategy(run), model, run.config.num_rounds, table)
    if decoded_error:  # the server rejected the reply with the same one-line reason, on record
        rows = run.record.metrics()[logged:]
        assert any(
            r.get("event") in ("reply-rejected", "update-rejected")
            and r["node"] == 100
            and decoded_error in r["reason"]
            for r in rows
        ), rows


# ------------------------------------------------------------------------- lent never-seen samples
def test_lent_samples_round_trip_and_bad_ones_are_refused_in_one_line() -> None:
    """``steer-reference`` (server -> device): what the device decodes is what the server sent, and a
    record that does not fit the device's data is a ValueError naming what is wrong."""
    from protocol.codec import record_nbytes, samples_from_record, samples_to_record

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(7, 3, 2)).astype(np.float32), np.arange(7) % 4
    fits = {"feature_shape": (3, 2), "num_classes": 4, "what": "steer-reference"}
    # the bytes the benchmarks count as sent: float32 features, int64 labels, whatever the input dtypes
    assert record_nbytes(samples_to_record((x.astype(np.float64), y.astype(np.int8)))) == 42 * 4 + 7 * 8
    got_x, got_y = samples_from_record(samples_to_record((x, y)), **fits)
    assert np.array_equal(got_x, x) and np.array_equal(got_y, y) and got_y.dtype == np.int64
    bad_nan = x.copy()
    bad_nan[2, 1, 0] = np.nan
    cases = [
        (samples_to_record((x.reshape(7, 6), y)), "features of shape"),
        (samples_to_record((x, y[:5])), "5 labels"),
        (samples_to_record((bad_nan, y)), "non-finite"),
        (samples_to_record((x, y + 1)), r"labels must be integers in \[0, 4\)"),
        (ArrayRecord({"x": Array(x)}), "exactly the arrays 'x' and 'y'"),
    ]
    for record, message in cases:
        with pytest.raises(ValueError, match=message) as error:
            samples_from_record(record, **fits)
        assert "steer-reference" in str(error.value) and "\n" not in str(error.value)
