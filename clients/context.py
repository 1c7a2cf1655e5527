"""What every client handler needs: the validated run config, its partition, its data and a model.

With ``client-data = "own"`` the device's data is its own file (node config ``data``, optional
``holdout-fraction`` and ``seed``), and the model's input shape and classes come from the server's
message (the device never reads the run's ``dataset``, which names the server's own data).
"""

from __future__ import annotations

import dataclasses

import torch
from flwr.app import Context, Message

from fedforget import data, models
from fedforget.client_data import OwnData, info_from_message
from fedforget.config import RunConfig
from fedforget.data.base import DatasetInfo
from fedforget.device import Device, default_store_path


@dataclasses.dataclass(frozen=True)
class ClientSetup:
    config: RunConfig
    partition_id: int
    device: Device
    model: torch.nn.Module
    server_round: int
    info: DatasetInfo  # the run model's input shape and classes


def partition_of(context: Context, config: RunConfig) -> int:
    """The client's partition id from its node config, checked against the run config."""
    node_config = context.node_config
    if "partition-id" not in node_config:
        raise ValueError("node config lacks 'partition-id' (start the SuperNode with --node-config)")
    partition_id = int(node_config["partition-id"])
    num_partitions = int(node_config.get("num-partitions", config.num_clients))
    if num_partitions != config.num_clients:
        raise ValueError(
            f"node config says num-partitions={num_partitions} but the run config has "
            f"num-clients={config.num_clients}; they must agree"
        )
    return partition_id


def store_path(context: Context, config: RunConfig, msg_config: dict, partition_id: int) -> str:
    """The device's request store: ``request-store`` in the node config, else inside the run record."""
    if "request-store" in context.node_config:
        return str(context.node_config["request-store"])
    run_id = str(msg_config.get("run-id", config.run_id))
    if not run_id:
        raise ValueError("the server sent no run-id and the node config names no request-store")
    return str(default_store_path(config, run_id, partition_id))


def client_setup(msg: Message, context: Context) -> ClientSetup:
    """Resolve config, partition, device (data + request store) and a model of the run's architecture.

    Schedule entries due by the message's round are copied into the device's store first, so a
    withdrawn sample is never trained on from the round of its request on. The run config and the
    partition id are kept in the store (:meth:`RequestStore.remember_run`) for ``fedforget withdraw``.
    """
    config = RunConfig.from_mapping(context.run_config)
    msg_config = dict(msg.content["config"]) if "config" in msg.content else {}
    model_name = str(msg_config.get("model", config.model))
    server_round = int(msg_config.get("server-round", 0))
    partition_id = partition_of(context, config)
    store = store_path(context, config, msg_config, partition_id)
    if config.client_data == "own":  # the device holds only its own file (node config ``data``)
        info = info_from_message(msg_config)
        own = OwnData.from_node_config(context.node_config)
        device = Device.open_own(config, own, store, partition_id=partition_id, info=info)
    else:
        info = data.load(config).info
        device = Device.open(config, partition_id, store)
    model = models.build_model(models.resolve_model_name(model_name, info), info, seed=config.seed)
    # the device keeps the run's config, so `fedforget withdraw` on it needs no --config / --set
    run_id = str(msg_config.get("run-id", config.run_id))
    device.store.remember_run({**config.to_dict(), "run-id": run_id}, partition_id=partition_id)
    device.sync_schedule(server_round)
    return ClientSetup(config, partition_id, device, model, server_round, info)
