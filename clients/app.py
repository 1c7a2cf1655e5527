"""The fedforget ClientApp: local training on the client's own partition.

Message contract (``train``):

* in:  ``arrays`` (global model ``ArrayRecord``), ``config`` (``ConfigRecord`` with ``server-round``
  and ``model``, the resolved model name);
* out: ``arrays`` (the locally trained model), ``metrics`` (``MetricRecord`` with ``num-examples``,
  ``train-loss``, ``client-seconds``, ``partition-id``).

The client recomputes its part of the split from the run config (deterministic), so only the global
model ever travels; raw samples never leave the client.
"""

from __future__ import annotations

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from clients.context import client_setup
from fedforget import training

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the received global model on this client's training samples."""
    setup = client_setup(msg, context)
    model = setup.model
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    server_round = int(msg.content["config"].get("server-round", 0))
    config = setup.config
    result = training.train(
        model,
        setup.data.x_train,
        setup.data.y_train,
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
