"""The fedforget ClientApp: local training, withdrawal requests, and local membership queries.

Message contracts:

``train``
  in:  ``arrays`` (global model), ``config`` (``server-round``, ``model``);
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

The client recomputes its part of the split from the run config (deterministic), so only models,
oracles, ids and decisions travel; raw samples never leave the client.
"""

from __future__ import annotations

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from clients.codec import ids_to_config, oracle_from_records
from clients.context import client_setup
from fedforget import data, models, training
from fedforget.forgetting import measure_forget_set

app = ClientApp()


def _round(msg: Message) -> int:
    return int(msg.content["config"].get("server-round", 0))


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the received global model on this client's training samples (minus withdrawn ones)."""
    setup = client_setup(msg, context)
    server_round = _round(msg)
    config = setup.config
    withdrawn = setup.data.withdrawn(config, server_round)
    local = setup.data.without(np.concatenate(list(withdrawn.values()))) if withdrawn else setup.data
    model = setup.model
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    result = training.train(
        model,
        local.x_train,
        local.y_train,
        epochs=config.local_epochs,
        learning_rate=config.learning_rate,
        batch_size=config.batch_size,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
        seed=config.seed * 1_000_003 + server_round * 1_009 + setup.partition_id,
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
    """Report this client's withdrawal requests made up to the server's current round."""
    setup = client_setup(msg, context)
    server_round = _round(msg)
    due = [
        r
        for r in setup.config.withdrawal_requests
        if r.client == setup.partition_id and r.round <= server_round
    ]
    withdrawn = setup.data.withdrawn(setup.config, server_round)
    summary = ConfigRecord(
        {
            "partition-id": setup.partition_id,
            "request-ids": [r.request_id for r in due],
            "grains": [r.grain for r in due],
            "rounds": [r.round for r in due],
        }
    )
    content = RecordDict({"requests": summary, "ids": ids_to_config(withdrawn)})
    return Message(content=content, reply_to=msg)


@app.query("membership")
def membership(msg: Message, context: Context) -> Message:
    """Judge this client's forget set with the server's oracle, locally; return decisions only."""
    setup = client_setup(msg, context)
    config = msg.content["config"]
    wanted = [str(r) for r in config.get("request-ids", [])]
    withdrawn = setup.data.withdrawn(setup.config, _round(msg))
    unknown = sorted(set(wanted) - set(withdrawn))
    if unknown or not wanted:
        raise ValueError(f"client {setup.partition_id} has no withdrawal request(s) {unknown or wanted}")
    forget_ids = np.unique(np.concatenate([withdrawn[r] for r in wanted]))
    model = setup.model
    model.load_state_dict(msg.content["model"].to_torch_state_dict())
    info = data.load(setup.config).info
    model_name = str(config.get("model", setup.config.model))
    factory = lambda: models.build_model(models.resolve_model_name(model_name, info), info)  # noqa: E731
    oracle = oracle_from_records(msg.content["oracle"], msg.content["oracle-config"], factory)
    retained = setup.data.without(np.concatenate(list(withdrawn.values())))
    report = measure_forget_set(
        model,
        oracle,
        forget=setup.data.subset(forget_ids),
        reference=(setup.data.x_holdout, setup.data.y_holdout),
        retain=(retained.x_train, retained.y_train),
    )
    decisions = ConfigRecord({"ids": [int(i) for i in report.ids], "member": [int(m) for m in report.member]})
    metrics = MetricRecord({**report.metrics(), "partition-id": setup.partition_id})
    return Message(content=RecordDict({"decisions": decisions, "metrics": metrics}), reply_to=msg)
