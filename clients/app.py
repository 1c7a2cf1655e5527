"""The fedforget ClientApp: local training, withdrawal requests, unlearning, and local judge queries.

Message contracts:

``train``
  in:  ``arrays`` (global model), ``config`` (``server-round``, ``model``, optional ``local-epochs``:
  fewer epochs for FedEraser's calibration rounds);
  out: ``arrays`` (locally trained model), ``metrics`` (``num-examples``, ``train-loss``,
  ``client-seconds``, ``partition-id``). Withdrawn (tombstoned) samples are never trained on.
``query.requests``
  in:  ``config`` (``server-round``);
  out: ``requests`` (``ConfigRecord``: ``partition-id``, ``request-ids``, ``grains``, ``rounds``),
  ``ids`` (``ConfigRecord``: request id -> the global ids it withdraws).
``query.judge``
  in:  ``model`` (global model), ``judge`` + ``judge-config`` (the server's judge, numbers only),
  ``config`` (``server-round``, ``model``, ``request-ids``: whose forget set to score, maybe none);
  out: ``calibration`` (per attack, score histograms of retained and held-out samples: counts),
  ``forget`` (``ids`` and each forget sample's score bin per attack), ``metrics`` (see :func:`judge`).
``train.unlearn``
  in:  ``arrays``, ``config`` (``request-ids``, ``unlearn-method``; no judge, no oracle: the device
  steers by its own, :mod:`fedforget.steer`);
  out: ``mask`` (the method's delta), ``metrics``, ``info`` (see :func:`unlearn`).

The device's data is its part of the run's shared dataset, recomputed from the run config
(``client-data = shared``, simulation), or its own file (``client-data = own``, node config ``data``).
No message carries a feature vector or a label, but what does leave the device says things about
its samples: sample ids and grains (``query.requests``), a member / non-member decision per withdrawn
sample's score bin under each of the judge's attacks and score histograms of its retained and held-out
samples (``query.judge``), trained models (``train``) and unlearning masks (``train.unlearn``).
A mask computed from one sample gives that sample's features and label away (gradient ascent and PGA
exactly); a device pads a forget set below ``min-forget-samples`` with decoys first. Every key, what
it reveals, measured: ``docs/privacy.md``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from clients.context import ClientSetup, client_setup
from clients.methods import compute_delta
from fedforget import models, training
from fedforget.judge import client_calibration, forget_bins
from fedforget.judge.calibration import MAX_CALIBRATION_SAMPLES
from fedforget.judge.for_run import calibration_seed
from protocol import messages as wire
from protocol.codec import ids_to_config, judge_from_records, samples_from_record

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the received global model on this device's training samples (never tombstoned ones)."""
    setup = client_setup(msg, context)
    config = setup.config
    msg_config = msg.content.get("config", {})
    local = setup.device.training_data()
    model = setup.model
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    if len(local.train_ids) == 0:  # everything withdrawn: contribute nothing (weight 0)
        metrics = MetricRecord(
            {"num-examples": 0, "train-loss": 0.0, "client-seconds": 0.0, "partition-id": setup.partition_id}
        )
        return Message(
            RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": metrics}), reply_to=msg
        )
    result = training.train(
        model,
        local.x_train,
        local.y_train,
        epochs=int(msg_config.get("local-epochs", config.local_epochs)),
        learning_rate=config.learning_rate,
        batch_size=config.batch_size,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
        seed=config.seed * 1_000_003 + setup.server_round * 1_009 + setup.partition_id,
    )
    metrics = MetricRecord(
        {
            "num-examples": result.num_examples,
            "train-loss": result.loss,
            "client-seconds": result.seconds,
            "partition-id": setup.partition_id,
        }
    )
    content = RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": metrics})
    return Message(content=content, reply_to=msg)


@app.query("requests")
def requests(msg: Message, context: Context) -> Message:
    """Report this device's withdrawal requests (every state) and the global ids of each."""
    setup = client_setup(msg, context)
    stored = setup.device.store.all()
    summary = ConfigRecord(
        {
            "partition-id": setup.partition_id,
            "request-ids": [r.request_id for r in stored],
            "grains": [r.grain for r in stored],
            "states": [r.state for r in stored],
        }
    )
    ids = ids_to_config({r.request_id: r.ids for r in stored})
    return Message(content=RecordDict({"requests": summary, "ids": ids}), reply_to=msg)


@app.query(wire.JUDGE_ACTION)
def judge(msg: Message, context: Context) -> Message:
    """Score this device's data with the server's judge, locally; return histograms and bins only.

    in: ``model``, ``judge`` + ``judge-config`` (the judge's attacks, numbers only), ``config``
    (``request-ids``: whose forget set to score, possibly none; ``calibration-samples``); out:
    ``calibration`` (per attack, the score histogram of the retained samples -- members -- and of the
    held-out samples -- non-members: counts per bin, :func:`fedforget.judge.client_calibration`),
    ``forget`` (only with request ids: ``ids`` and, per attack, the bin of each forget sample) and
    ``metrics`` (forget / retain / reference accuracy, ``num-forget``, ``partition-id``).
    """
    setup = client_setup(msg, context)
    config = msg.content[wire.CONFIG]
    wanted = [str(r) for r in config.get(wire.REQUEST_IDS, [])]
    device, model = setup.device, setup.model
    model.load_state_dict(msg.content[wire.MODEL].to_torch_state_dict())
    judge_ = judge_from_records(
        msg.content[wire.JUDGE], msg.content[wire.JUDGE_CONFIG], _factory(setup, config)
    )
    retained = device.training_data()
    heldout = device.reference_set()
    calibration = client_calibration(
        judge_,
        model,
        retained=(retained.x_train, retained.y_train),
        heldout=heldout,
        max_samples=int(config.get(wire.CALIBRATION_SAMPLES, MAX_CALIBRATION_SAMPLES)),
        seed=calibration_seed(setup.config.seed, setup.partition_id),
    )
    content = RecordDict(
        {wire.CALIBRATION: ArrayRecord({k: Array(v) for k, v in calibration.to_arrays().items()})}
    )
    metrics: dict[str, float] = {
        wire.PARTITION_ID: setup.partition_id,
        "retain-accuracy": training.evaluate(model, retained.x_train, retained.y_train).accuracy
        if len(retained.y_train)
        else float("nan"),
        "reference-accuracy": training.evaluate(model, *heldout).accuracy,
        wire.NUM_FORGET: 0,
        "forget-accuracy": float("nan"),
    }
    if wanted:
        ids, x_forget, y_forget = device.forget_set(wanted)
        bins = forget_bins(judge_, model, forget=(x_forget, y_forget))
        content[wire.FORGET] = ArrayRecord(
            {wire.IDS: Array(np.asarray(ids, dtype=np.int64)), **{a: Array(b) for a, b in bins.items()}}
        )
        metrics[wire.NUM_FORGET] = len(ids)
        metrics["forget-accuracy"] = training.evaluate(model, x_forget, y_forget).accuracy
    content[wire.METRICS] = MetricRecord(metrics)
    return Message(content=content, reply_to=msg)


@app.train("unlearn")
def unlearn(msg: Message, context: Context) -> Message:
    """Compute this device's unlearning delta for its withdrawal requests, locally.

    in: ``arrays`` (global model), ``config`` (``request-ids``,
    ``unlearn-method`` -- forsaken, gradient-ascent or pga; forsaken when absent --,
    ``unlearn-target``, ``target-fr``, ``forsaken-steps``, ...; never the server's judge) and, when the
    server lends them, ``steer-reference`` (never-seen samples the device steers by beside its
    held-out samples, :mod:`fedforget.steer`); out:
    ``mask`` (parameter name -> delta, what the server adds to the global model), ``metrics``
    (steps, seconds, the method's own numbers, ``steer-*``: what the device's own oracle says) and
    ``info`` (``method``, ``stopped-because``). The methods: ``clients/methods.py``.
    """
    setup = client_setup(msg, context)
    config = msg.content["config"]
    wanted = [str(r) for r in config.get("request-ids", [])]
    if not wanted:
        raise ValueError("unlearn message names no request")
    method = str(config.get("unlearn-method", "forsaken"))
    setup.model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    _, x_forget, y_forget = setup.device.forget_set(wanted)
    lent = None
    if wire.STEER_REFERENCE in msg.content.array_records:
        lent = samples_from_record(
            msg.content[wire.STEER_REFERENCE],
            feature_shape=tuple(setup.device.reference_set()[0].shape[1:]),
            num_classes=setup.info.num_classes,
            what="the server's steer-reference",
        )

    result = compute_delta(method, setup, config, (x_forget, y_forget), lent=lent)
    mask = ArrayRecord({name: Array(delta) for name, delta in result.mask.items()})
    metrics = MetricRecord(
        {"partition-id": setup.partition_id, "num-forget": len(y_forget), **result.metrics}
    )
    info = ConfigRecord({"method": method, "stopped-because": result.stopped_because})
    return Message(content=RecordDict({"mask": mask, "metrics": metrics, "info": info}), reply_to=msg)


@app.query("receipt")
def receipt(msg: Message, context: Context) -> Message:
    """Store the server's receipt for completed requests in the device's durable store."""
    setup = client_setup(msg, context)
    config = msg.content["config"]
    doc = dict(msg.content["receipt"])
    done = []
    for rid in [str(r) for r in config.get("request-ids", [])]:
        stored = setup.device.store.complete(
            rid, {**doc, "request-id": rid}, detail=str(config.get("outcome", ""))
        )
        done.append(stored.request_id)
    return Message(content=RecordDict({"done": ConfigRecord({"request-ids": done})}), reply_to=msg)


def _factory(setup: ClientSetup, config: ConfigRecord) -> Callable[[], torch.nn.Module]:
    info = setup.info
    name = models.resolve_model_name(str(config.get("model", setup.config.model)), info)
    return lambda: models.build_model(name, info)
