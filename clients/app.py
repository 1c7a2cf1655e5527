"""The fedforget ClientApp: local training, withdrawal requests, and local membership queries.

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
``query.membership``
  in:  ``model`` (global model), ``oracle`` + ``oracle-config`` (the server's membership oracle,
  numbers only), ``config`` (``server-round``, ``model``, ``request-ids``: whose forget set to judge);
  out: ``decisions`` (``ConfigRecord``: ``ids``, ``member`` as 0/1), ``metrics`` (forget / retain /
  reference accuracy, attack AUC, forget-set size).
``train.unlearn``
  in:  ``arrays``, ``oracle`` + ``oracle-config``, ``config`` (``request-ids``, ``unlearn-method``);
  out: ``mask`` (the method's delta), ``metrics``, ``info`` (see :func:`unlearn`).

The device's data is its part of the run's shared dataset, recomputed from the run config
(``client-data = shared``, simulation), or its own file (``client-data = own``, node config ``data``).
No message carries a feature vector or a label, but what does leave the device says things about
its samples: sample ids and grains (``query.requests``), a member / non-member decision per withdrawn
sample (``query.membership``), trained models (``train``) and unlearning masks (``train.unlearn``).
A mask computed from one sample gives that sample's features and label away (gradient ascent and PGA
exactly); a device pads a forget set below ``min-forget-samples`` with decoys first. Every key, what
it reveals, measured: ``docs/privacy.md``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from clients.context import ClientSetup, client_setup
from clients.methods import compute_delta
from fedforget import models, training
from fedforget.forgetting import measure_forget_set
from fedforget.mia import MembershipOracle
from protocol.codec import ids_to_config, oracle_from_records

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


@app.query("membership")
def membership(msg: Message, context: Context) -> Message:
    """Judge this device's forget set with the server's oracle, locally; return decisions only."""
    setup = client_setup(msg, context)
    config = msg.content["config"]
    wanted = [str(r) for r in config.get("request-ids", [])]
    if not wanted:
        raise ValueError("membership query names no request")
    device = setup.device
    model = setup.model
    model.load_state_dict(msg.content["model"].to_torch_state_dict())
    oracle = oracle_from_records(msg.content["oracle"], msg.content["oracle-config"], _factory(setup, config))
    retained = device.training_data()
    report = measure_forget_set(
        model,
        oracle,
        forget=device.forget_set(wanted),
        reference=device.reference_set(),
        retain=(retained.x_train, retained.y_train),
    )
    decisions = ConfigRecord({"ids": [int(i) for i in report.ids], "member": [int(m) for m in report.member]})
    metrics = MetricRecord({**report.metrics(), "partition-id": setup.partition_id})
    return Message(content=RecordDict({"decisions": decisions, "metrics": metrics}), reply_to=msg)


@app.train("unlearn")
def unlearn(msg: Message, context: Context) -> Message:
    """Compute this device's unlearning delta for its withdrawal requests, locally.

    in: ``arrays`` (global model), ``oracle`` + ``oracle-config``, ``config`` (``request-ids``,
    ``unlearn-method`` -- forsaken, gradient-ascent or pga; forsaken when absent --,
    ``unlearn-target``, ``target-fr``, ``forsaken-steps``, ...); out: ``mask`` (parameter name ->
    delta, what the server adds to the global model), ``metrics`` (steps, seconds, the method's own
    numbers) and ``info`` (``method``, ``stopped-because``). The methods: ``clients/methods.py``.
    """
    setup = client_setup(msg, context)
    config = msg.content["config"]
    wanted = [str(r) for r in config.get("request-ids", [])]
    if not wanted:
        raise ValueError("unlearn message names no request")
    method = str(config.get("unlearn-method", "forsaken"))
    setup.model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    _, x_forget, y_forget = setup.device.forget_set(wanted)

    def oracle() -> MembershipOracle:
        records = msg.content["oracle"], msg.content["oracle-config"]
        return oracle_from_records(*records, _factory(setup, config))

    result = compute_delta(method, setup, config, (x_forget, y_forget), oracle)
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
