"""Unlearning rounds on the server: ask the requesting clients for masks, check them, apply them.

For a batch of new withdrawal requests (several clients may withdraw in the same round):

1. each owning client gets the global model and the oracle (``train.unlearn``) and computes its
   Forsaken mask locally (``clients/app.py``);
2. every returned mask is validated (:func:`validate_mask`): known parameter names, the parameter's
   shape, a floating dtype, only finite values, and an L2 norm at most ``max-mask-ratio`` times the
   global model's parameter norm. A bad mask is rejected, logged, and never touches the model;
3. the accepted masks are **summed** onto the global model: ``w <- w + sum_k m_k``. Each client's mask
   is that client's whole change for its own forget set, so averaging (FedAvg's rule) would shrink
   every change by the number of withdrawing clients; summing applies each in full, which to first
   order equals applying them one after another;
4. the evaluator measures FR, accuracies and attack AUC on the new model; the round repeats, up to
   ``unlearn-rounds`` times, until the target is met: ``unlearn-target=fr`` -> FR >= ``target-fr``;
   ``unlearn-target=retrain`` -> forget-vs-reference attack AUC within 0.03 of 0.5.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from clients.codec import oracle_to_records
from server.console import RoundTable
from server.evaluator import QUERY_TIMEOUT_S, ForgettingEvaluator, KnownRequest, message_config
from server.setup import PreparedRun

AUC_TOLERANCE = 0.03


class MaskRejected(ValueError):
    """A client's mask failed validation."""


def parameter_names(model: torch.nn.Module) -> set[str]:
    return {name for name, _ in model.named_parameters()}


def validate_mask(
    mask: Mapping[str, np.ndarray], state: Mapping[str, torch.Tensor], trainable: set[str], max_ratio: float
) -> None:
    """Raise :class:`MaskRejected` unless ``mask`` is a sane change of the ``trainable`` parameters."""
    if not mask:
        raise MaskRejected("the mask is empty")
    unknown = sorted(set(mask) - trainable)
    if unknown:
        raise MaskRejected(f"the mask names parameters the model does not train: {unknown[:5]}")
    squared = 0.0
    for name, delta in mask.items():
        expected = tuple(state[name].shape)
        if tuple(delta.shape) != expected:
            raise MaskRejected(f"mask[{name!r}] has shape {tuple(delta.shape)}, the parameter has {expected}")
        if delta.dtype.kind != "f":
            raise MaskRejected(f"mask[{name!r}] has dtype {delta.dtype}, expected a float type")
        if not np.isfinite(delta).all():
            raise MaskRejected(f"mask[{name!r}] holds non-finite values")
        squared += float(np.square(delta, dtype=np.float64).sum())
    model_norm = math.sqrt(sum(float(state[n].double().square().sum()) for n in trainable))
    if math.sqrt(squared) > max_ratio * model_norm:
        raise MaskRejected(
            f"mask L2 norm {math.sqrt(squared):.4g} exceeds max-mask-ratio x model norm "
            f"({max_ratio} x {model_norm:.4g})"
        )


def apply_masks(
    state: Mapping[str, torch.Tensor], masks: list[Mapping[str, np.ndarray]]
) -> dict[str, torch.Tensor]:
    """``w + sum_k m_k`` for every masked parameter (others, and buffers, unchanged)."""
    out = {k: v.clone() for k, v in state.items()}
    for mask in masks:
        for name, delta in mask.items():
            out[name] = out[name] + torch.as_tensor(delta, dtype=out[name].dtype)
    return out


def model_hash(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over the state_dict's names and bytes (for receipts and audits)."""
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _nbytes(record: ArrayRecord) -> int:
    return sum(record[k].numpy().nbytes for k in record)


def target_met(config_target: str, target_fr: float, measured: Mapping[str, Any]) -> bool:
    if config_target == "fr":
        fr = measured.get("fr")
        return fr is not None and math.isfinite(fr) and fr >= target_fr
    auc = measured.get("attack-auc")
    return auc is not None and math.isfinite(auc) and abs(auc - 0.5) <= AUC_TOLERANCE


def run_unlearning(
    grid: Grid,
    run: PreparedRun,
    evaluator: ForgettingEvaluator,
    arrays: ArrayRecord,
    server_round: int,
    requests: list[KnownRequest],
    table: RoundTable,
    evaluate_global: Any,
) -> ArrayRecord:
    """Unlearning rounds for ``requests``; returns the unlearned global model."""
    config, record = run.config, run.record
    trainable = parameter_names(run.model)
    oracle_arrays, oracle_config = oracle_to_records(evaluator.oracle())
    by_node: dict[int, list[KnownRequest]] = {}
    for r in requests:
        by_node.setdefault(r.node_id, []).append(r)
    for unlearn_round in range(1, config.unlearn_rounds + 1):
        start = time.perf_counter()
        messages = []
        for node_id, items in by_node.items():
            msg_config = {
                **message_config(run, server_round),
                "request-ids": [r.request_id for r in items],
                "unlearn-target": config.unlearn_target,
                "target-fr": config.target_fr,
                "forsaken-steps": config.forsaken_steps,
            }
            content = RecordDict(
                {
                    "arrays": arrays,
                    "oracle": oracle_arrays,
                    "oracle-config": oracle_config,
                    "config": ConfigRecord(msg_config),
                }
            )
            messages.append(
                Message(content, dst_node_id=node_id, message_type=f"{MessageType.TRAIN}.unlearn")
            )
        bytes_down = sum(_nbytes(arrays) + _nbytes(oracle_arrays) for _ in messages)
        replies = list(grid.send_and_receive(messages, timeout=QUERY_TIMEOUT_S))
        state = arrays.to_torch_state_dict()
        accepted: list[dict[str, np.ndarray]] = []
        client_seconds, bytes_up, rejected = 0.0, 0, 0
        for reply in replies:
            node = reply.metadata.src_node_id
            if reply.has_error():
                rejected += 1
                _log_rejection(
                    record, table, server_round, node, f"client error: {reply.error.reason[-300:]}"
                )
                continue
            mask = {k: reply.content["mask"][k].numpy() for k in reply.content["mask"]}
            try:
                validate_mask(mask, state, trainable, config.max_mask_ratio)
            except MaskRejected as error:
                rejected += 1
                _log_rejection(record, table, server_round, node, str(error))
                continue
            accepted.append(mask)
            bytes_up += _nbytes(reply.content["mask"])
            client_seconds += float(reply.content["metrics"]["client-seconds"])
        if accepted:
            arrays = ArrayRecord(apply_masks(state, accepted))
        row: dict[str, Any] = {
            "round": server_round,
            "phase": "unlearn",
            "unlearn-round": unlearn_round,
            "method": config.unlearn_method,
            "request-ids": [r.request_id for r in requests],
            **evaluate_global(run, arrays),
            "masks-accepted": len(accepted),
            "masks-rejected": rejected,
            "mask-l2": float(
                math.sqrt(
                    sum(float(np.square(d, dtype=np.float64).sum()) for m in accepted for d in m.values())
                )
            ),
            "mask-nonzero": int(sum(int(np.count_nonzero(d)) for m in accepted for d in m.values())),
            "bytes-down": bytes_down,
            "bytes-up": bytes_up,
            "client-seconds": client_seconds,
        }
        row.update(evaluator.measure(grid, arrays, server_round))
        row["seconds"] = time.perf_counter() - start
        record.append_metrics(row)
        table.print_row({**row, "phase": f"unlearn{unlearn_round}"})
        if not accepted:
            raise RuntimeError(f"unlearning round {unlearn_round}: no client returned a valid mask")
        if target_met(config.unlearn_target, config.target_fr, row):
            break
    return arrays


def _log_rejection(record: Any, table: RoundTable, server_round: int, node: int, reason: str) -> None:
    record.append_metrics(
        {"round": server_round, "phase": "unlearn", "event": "mask-rejected", "node": node, "reason": reason}
    )
    table.print_event(f"mask from node {node} rejected: {reason}")


def ensure_array_record(state: Mapping[str, torch.Tensor]) -> ArrayRecord:
    return ArrayRecord({k: Array(v.detach().cpu().numpy()) for k, v in state.items()})
