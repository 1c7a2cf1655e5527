"""What every client handler needs: the validated run config, its partition, its data and a model."""

from __future__ import annotations

import dataclasses

import torch
from flwr.app import Context, Message

from fedforget import data, models
from fedforget.client_data import ClientData
from fedforget.config import RunConfig


@dataclasses.dataclass(frozen=True)
class ClientSetup:
    config: RunConfig
    partition_id: int
    data: ClientData
    model: torch.nn.Module


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


def client_setup(msg: Message, context: Context) -> ClientSetup:
    """Resolve config, partition, data and an (untrained) model of the run's architecture."""
    config = RunConfig.from_mapping(context.run_config)
    model_name = str(msg.content["config"].get("model", config.model))
    partition_id = partition_of(context, config)
    info = data.load(config).info
    model = models.build_model(models.resolve_model_name(model_name, info), info, seed=config.seed)
    return ClientSetup(config, partition_id, ClientData.for_partition(config, partition_id), model)
