"""Withdrawal requests on the server: one unlearning attempt per batch, committed exactly once.

The exactly-once invariant (``docs/recovery.md``): **a request is ``unlearned`` in the ledger only if
the run's resume point (``resume.pt``) holds a model with its unlearning applied, and every resume
point written after that holds it too.** Hence the order of a commit:

1. ``ledger.begin_attempt``: ``received -> unlearning`` (the attempt is counted). A request found
   before the run's first training round skips step 2: the model never trained on its samples
   (the device tombstoned them first), so it is committed as ``excluded-before-training``;
2. the unlearning rounds run (``server/unlearning.py``); requests of nodes that failed go back to
   ``received`` (``ledger.fail_attempt``, the reason recorded) with nothing of theirs in the model.
   The new model must be healthy (:func:`server.validation.check_model_health`: finite outputs on
   the test data, test accuracy at least the accuracy before the attempt minus
   ``max-accuracy-drop``, by default the method's own budget, ``fedforget.config.ACCURACY_BUDGETS``);
   an unhealthy one is never committed: the attempt fails
   (``attempt-failed``, reason ``unhealthy model: ...``), every request of it stays ``received``
   and the run goes on from the model before the attempt;
3. ``record.save_resume_point``: the model with the unlearning, and the list of applied requests with
   their receipts, in one atomic file;
4. ``ledger.mark_unlearned`` (outcome + receipt);
5. the receipt goes to the device (``query.receipt``); once it confirms, ``ledger.mark_delivered``.

A crash before 3 leaves the request ``unlearning`` and the resume point without it: on resume it is
rolled back to ``received`` and unlearned again from a model that never held it. A crash between 3
and 4 leaves it ``unlearning`` but held by the resume point: on resume it is rolled forward to
``unlearned`` (:meth:`server.ledger.Ledger.reconcile`), never redone. A crash after 4 only re-sends
the receipt (the device stores it idempotently).

Each commit point calls :func:`fedforget.crashpoints.crash_point` (``masks-aggregated``,
``resume-written``, ``ledger-committed``): a no-op unless a recovery test asks this process to die
there (``tests/test_recovery.py``). Every receipt names the two checkpoints that hold its models
(``checkpoints/unlearning-<round>-before.pt`` / ``-after.pt``, written before the resume point),
so ``fedforget verify`` can recompute its hashes.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from flwr.app import ArrayRecord
from flwr.serverapp import Grid

from fedforget.attempt_rules import target_met
from fedforget.crashpoints import crash_point
from fedforget.judge import retrain_verdict
from fedforget.verify import model_hash
from server.attempt import Attempt, EvaluateGlobal, TrainRound
from server.console import RoundTable
from server.evaluator import ForgettingEvaluator, KnownRequest
from server.ledger import Key
from server.retrain_reference import retrain_reference
from server.setup import PreparedRun
from server.unlearning import run_unlearning
from server.validation import ModelUnhealthy, check_model_health

EXCLUDED_BEFORE_TRAINING = "excluded-before-training"
"""The outcome of a request found before the run's first training round (nothing to unlearn)."""


def handle_withdrawals(
    grid: Grid,
    run: PreparedRun,
    evaluator: ForgettingEvaluator,
    arrays: ArrayRecord,
    server_round: int,
    requests: list[KnownRequest],
    table: RoundTable,
    applied: MutableMapping[Key, dict[str, Any]],
    evaluate_global: EvaluateGlobal,
    train_round: TrainRound | None = None,
) -> ArrayRecord:
    """One unlearning attempt for ``requests`` before training round ``server_round``.

    Returns the model to train on next: with the unlearning of every request whose node took part
    to the end, without anything from nodes that failed. ``applied`` (request key -> outcome and
    receipt) is updated and written to the resume point before the ledger says ``unlearned``.
    ``train_round`` (one FedAvg round, ``server/rounds.py``) is what the server-side methods
    (finetune, retrain) run; the receipt carries the attempt's cost (``cost-client-seconds``,
    ``cost-bytes-sent``, ``cost-unlearn-seconds``) for every method.
    """
    record, ledger = run.record, run.ledger
    keys = [r.key for r in requests]
    ledger.begin_attempt(keys, server_round)
    for r in requests:
        r.outcome = "unlearning"
    if server_round == 1:  # the model has not been trained yet: it never saw these samples
        return _excluded_before_training(grid, run, evaluator, arrays, server_round, requests, table, applied)
    before, failed_before = evaluator.record_before(grid, arrays, server_round, requests)
    _fail(run, evaluator, failed_before, server_round, "the device failed before unlearning")
    requests = [r for r in requests if r not in failed_before]
    if not requests:
        return arrays
    accuracy_before = evaluate_global(run, arrays)
    event = {
        "round": server_round - 1,
        "phase": "withdrawal",
        "event": "request-received",
        "request-ids": [r.request_id for r in requests],
        "num-forget": sum(len(r.ids) for r in requests),
        **accuracy_before,
        **before,
    }
    record.append_metrics(event)
    table.print_event(
        f"withdrawal {', '.join(r.request_id for r in requests)}: {event['num-forget']} samples; "
        f"judge ({before.get('judge')}) judges {before.get('b-t', '?')} member / "
        f"{before.get('b-f', '?')} non-member before unlearning; its power on this model: AUC "
        f"{_show(before.get('judge-auc'))}"
        + ("" if before.get("judge-measurable") else " (at chance: FR will be reported as not measurable)")
    )
    state_before = arrays.to_torch_state_dict()
    checkpoint_before = f"unlearning-{server_round}-before"
    checkpoint_after = f"unlearning-{server_round}-after"
    record.save_named_checkpoint(checkpoint_before, state_before)
    if "before-unlearning" not in record.named_checkpoints():
        record.save_named_checkpoint("before-unlearning", state_before)
    attempt = Attempt(grid, run, evaluator, server_round, requests, table, evaluate_global, train_round)
    result = run_unlearning(attempt, arrays)
    for node, reason in result.failed.items():
        _fail(run, evaluator, [r for r in requests if r.node_id == node], server_round, reason)
    if not result.done:
        return arrays  # nothing of the failed nodes is in the model: continue from the model before
    run.model.load_state_dict(result.arrays.to_torch_state_dict())
    try:
        check_model_health(
            run.model,
            run.dataset.x_test,
            run.dataset.y_test,
            accuracy_before=accuracy_before["test-accuracy"],
            max_accuracy_drop=run.config.effective_max_accuracy_drop,
        )
    except ModelUnhealthy as error:
        table.print_event(f"unlearning attempt rolled back: unhealthy model: {error}")
        _fail(run, evaluator, result.done, server_round, f"unhealthy model: {error}; rolled back")
        return arrays  # never committed: continue from the model before the attempt
    crash_point("masks-aggregated")
    state_after = result.arrays.to_torch_state_dict()
    last = result.last
    members = sum(sum((r.before or {}).values()) for r in result.done)
    total = sum(len(r.ids) for r in result.done)
    met = target_met(run.config.unlearn_target, run.config.target_fr, last)
    reference = _retrain_reference(grid, run, evaluator, server_round, table, last)
    receipt = {
        "run-id": run.config.run_id,
        "round": server_round,
        "unlearn-rounds": int(last.get("unlearn-round", 0)),
        "method": run.config.unlearn_method,
        "target": run.config.unlearn_target,
        "target-met": met,
        "judge": last.get("judge"),
        "fr": last.get("fr"),
        "fr-status": last.get("fr-status"),
        "attack-auc": last.get("attack-auc"),
        **{k: v for k, v in last.items() if k.startswith(("fr-", "attack-auc-")) and k != "fr-reason"},
        "steer-fr": last.get("steer-fr"),
        "steer-target-met": last.get("steer-target-met"),
        "b-t": members,
        "b-f": total - members,
        "a-f": last.get("a-f"),
        "test-accuracy-before": accuracy_before["test-accuracy"],
        "test-accuracy-after": last.get("test-accuracy"),
        **{k: v for k, v in reference.items() if k in RECEIPT_REFERENCE or k.startswith("verdict")},
        "model-hash-before": model_hash(state_before),
        "model-hash-after": model_hash(state_after),
        "checkpoint-before": checkpoint_before,
        "checkpoint-after": checkpoint_after,
        **{f"cost-{k}": v for k, v in result.cost.items()},
    }
    # a receipt holds values only: what is not measured is absent (fr-status says why), so the
    # ledger's receipt and the one the device stores (a Flower ConfigRecord holds no None) are equal
    receipt = {k: v for k, v in receipt.items() if v is not None}
    outcome = "unlearned" if met else "unlearned-below-target"
    record.save_named_checkpoint(checkpoint_after, state_after)
    record.save_named_checkpoint("after-unlearning", state_after)
    _commit(grid, run, evaluator, server_round, result.done, applied, state_after, outcome, receipt)
    return result.arrays


def _commit(
    grid: Grid,
    run: PreparedRun,
    evaluator: ForgettingEvaluator,
    server_round: int,
    done: list[KnownRequest],
    applied: MutableMapping[Key, dict[str, Any]],
    state_after: dict[str, Any],
    outcome: str,
    receipt: dict[str, Any],
) -> None:
    """Steps 3-5 of the module docstring, in that order: resume point, ledger, receipts."""
    for r in done:
        r.outcome, r.receipt = outcome, receipt
        applied[r.key] = {"outcome": outcome, "receipt": receipt}
    # The order is the invariant: the model that holds the unlearning is durable first.
    run.record.save_resume_point(server_round - 1, state_after, applied)
    crash_point("resume-written")
    run.ledger.mark_unlearned([r.key for r in done], server_round, outcome, receipt)
    crash_point("ledger-committed")
    evaluator.write_withdrawals()
    deliver_receipts(grid, run, evaluator, server_round, done)


def _excluded_before_training(
    grid: Grid,
    run: PreparedRun,
    evaluator: ForgettingEvaluator,
    arrays: ArrayRecord,
    server_round: int,
    requests: list[KnownRequest],
    table: RoundTable,
    applied: MutableMapping[Key, dict[str, Any]],
) -> ArrayRecord:
    """Requests found before the run's first training round: their samples were tombstoned on the
    device before this run's model trained on anything, so no model of this run ever learned them.

    Nothing is unlearned and the model is unchanged; the request is committed like an unlearning
    (resume point, ledger, receipt) with outcome ``excluded-before-training`` and a receipt that
    says so, with the hash (before = after) of the untrained model it was excluded from.
    """
    state = arrays.to_torch_state_dict()
    name = f"unlearning-{server_round}-before"
    run.record.save_named_checkpoint(name, state)
    digest = model_hash(state)
    receipt = {
        "run-id": run.config.run_id,
        "round": server_round,
        "unlearn-rounds": 0,
        "method": "none",
        "note": (
            "withdrawn before this run's model was trained: the samples were excluded from training "
            "from the start, so the model never learned them and nothing was unlearned"
        ),
        "model-hash-before": digest,
        "model-hash-after": digest,
        "checkpoint-before": name,
        "checkpoint-after": name,
    }
    run.record.append_metrics(
        {
            "round": server_round,
            "phase": "withdrawal",
            "event": EXCLUDED_BEFORE_TRAINING,
            "request-ids": [r.request_id for r in requests],
            "num-forget": sum(len(r.ids) for r in requests),
        }
    )
    table.print_event(
        f"withdrawal {', '.join(r.request_id for r in requests)}: found before the first training round; "
        "the samples were never trained on: nothing to unlearn"
    )
    _commit(grid, run, evaluator, server_round, requests, applied, state, EXCLUDED_BEFORE_TRAINING, receipt)
    return arrays


RECEIPT_REFERENCE = ("fr-retrain", "attack-auc-retrain", "test-accuracy-retrain", "retrain-checkpoint")
"""What a receipt carries of the retrain reference (with ``retrain-reference = 1``)."""


def _retrain_reference(
    grid: Grid,
    run: PreparedRun,
    evaluator: ForgettingEvaluator,
    server_round: int,
    table: RoundTable,
    last: dict[str, Any],
) -> dict[str, Any]:
    """With ``retrain-reference = 1``: the retrained model's FR beside the unlearned one's, recorded."""
    if not run.config.retrain_reference:
        return {}
    try:
        reference = retrain_reference(grid, run, evaluator, server_round)
    except Exception as error:  # noqa: BLE001 - an instrument: its failure must not undo the unlearning
        reason = f"{type(error).__name__}: {error}"
        run.record.append_metrics(
            {
                "round": server_round,
                "phase": "unlearn",
                "event": "retrain-reference",
                "retrain-error": reason,
            }
        )
        table.print_event(f"retrain reference failed ({reason}); recorded as missing, the unlearning stands")
        return {}
    if not reference:
        return {}
    verdicts = retrain_verdict(unlearned=per_attack(last), retrained=per_attack(reference, suffix="-retrain"))
    for attack, verdict in verdicts.items():
        reference[f"verdict-{attack}"] = verdict["verdict"]
        reference[f"verdict-reason-{attack}"] = verdict["reason"]
    headline = last.get("judge")
    reference["verdict"] = verdicts.get(headline, {}).get("verdict") if headline else None
    run.record.append_metrics(
        {"round": server_round, "phase": "unlearn", "event": "retrain-reference", **reference}
    )
    table.print_event(
        f"retrain reference ({reference['retrain-rounds']} rounds without the withdrawn data, "
        f"{reference['retrain-seconds']:.1f}s; {reference.get('retrain-checkpoint')}): judge ({headline}) "
        f"FR {_show(reference.get('fr-retrain'))} (unlearned: {_show(last.get('fr'))}), forget-vs-never-seen "
        f"AUC {_show(reference.get('attack-auc-retrain'))} (unlearned: {_show(last.get('attack-auc'))}), "
        f"test accuracy {_show(reference['test-accuracy-retrain'], 4)} "
        f"(unlearned: {_show(last.get('test-accuracy'), 4)}); verdict: "
        + ", ".join(f"{a} {v['verdict']}" for a, v in verdicts.items())
    )
    return reference


def _show(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None or value != value else f"{value:.{digits}f}"


def per_attack(row: dict[str, Any], *, suffix: str = "") -> dict[str, dict[str, Any]]:
    """``{attack: {"fr", "auc", "status"}}`` from a measured row's ``fr-<attack>{suffix}``,
    ``attack-auc-<attack>{suffix}`` and ``fr-status-<attack>{suffix}`` (what ``retrain_verdict`` reads)."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in row.items():
        if key.startswith("fr-status-") and key.endswith(suffix):
            attack = key[len("fr-status-") : len(key) - len(suffix)]
            if not attack:  # the headline's own fr-status: not an attack
                continue
            fr = row.get(f"fr-{attack}{suffix}")
            auc = row.get(f"attack-auc-{attack}{suffix}")
            out[attack] = {
                "fr": float("nan") if fr is None else float(fr),
                "auc": float("nan") if auc is None else float(auc),
                "status": value,
            }
    return out


def deliver_receipts(
    grid: Grid,
    run: PreparedRun,
    evaluator: ForgettingEvaluator,
    server_round: int,
    requests: list[KnownRequest],
) -> None:
    """Send receipts; mark the ones the device confirmed as delivered (the others are re-sent later)."""
    if not requests:
        return
    confirmed = evaluator.send_receipts(grid, server_round, requests)
    pending = [r.key for r in confirmed if (entry := run.ledger.get(*r.key)) and entry.state == "unlearned"]
    if pending:
        run.ledger.mark_delivered(pending, server_round)


def _fail(
    run: PreparedRun,
    evaluator: ForgettingEvaluator,
    requests: list[KnownRequest],
    server_round: int,
    reason: str,
) -> None:
    if not requests:
        return
    run.ledger.fail_attempt([r.key for r in requests], server_round, reason)
    for r in requests:
        r.outcome, r.before = "pending", None
    run.record.append_metrics(
        {
            "round": server_round,
            "phase": "withdrawal",
            "event": "attempt-failed",
            "request-ids": [r.request_id for r in requests],
            "reason": reason,
        }
    )
    evaluator.write_withdrawals()
