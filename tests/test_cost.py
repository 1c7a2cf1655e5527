"""Sample-passes (fedforget.cost): counted by the code, exactly for training and evaluation."""

from __future__ import annotations

import copy

import numpy as np
import torch

from fedforget import data, models
from fedforget.client_data import ClientData
from fedforget.config import RunConfig
from fedforget.cost import count_sample_passes, not_counted
from fedforget.federated import fedavg
from fedforget.training import evaluate, train


def _memorise() -> tuple[RunConfig, data.Dataset]:
    config = RunConfig(dataset="memorise", num_clients=3, num_rounds=2, local_epochs=2)
    return config, data.load(config)


def test_training_costs_a_forward_and_a_backward_per_sample_per_epoch_evaluation_a_forward() -> None:
    config, dataset = _memorise()
    model = models.build_model("auto", dataset.info, seed=0)
    with count_sample_passes() as outer:
        with count_sample_passes() as training:
            train(model, dataset.x_train[:70], dataset.y_train[:70], epochs=3, batch_size=16)
        evaluate(copy.deepcopy(model), dataset.x_test[:40], dataset.y_test[:40])  # copies count too
        with not_counted():
            evaluate(model, dataset.x_test, dataset.y_test)
    assert training.to_dict() == {"forward": 210, "backward": 210, "total": 420}
    assert outer.forward == 250 and outer.backward == 210 and outer.total == 460


def test_models_not_built_by_fedforget_and_forwards_outside_a_block_are_not_counted() -> None:
    plain = torch.nn.Linear(4, 2)
    _, dataset = _memorise()
    tracked = models.build_model("auto", dataset.info, seed=0)
    tracked(torch.zeros(5, dataset.x_train.shape[1]))  # no block open: nothing to count into
    with count_sample_passes() as passes:
        plain(torch.zeros(7, 4))
    assert passes.total == 0


def test_fedavg_costs_exactly_two_passes_per_sample_per_local_epoch_plus_its_two_evaluations() -> None:
    config, dataset = _memorise()
    sizes = [len(ClientData.for_partition(config, k).train_ids) for k in range(config.num_clients)]
    forget = ClientData.for_partition(config, 0).train_ids[:9]
    with count_sample_passes() as passes:
        fedavg(config, exclude={0: forget}, evaluate=False)
    trained = config.num_rounds * config.local_epochs * (sum(sizes) - len(forget))
    assert passes.backward == trained
    assert passes.forward == trained + 2 * len(dataset.y_test)  # rounds 0 and last are evaluated
    assert np.isfinite(passes.total)


def test_phases_attribute_passes_to_the_innermost_phase_and_seconds_exclusively() -> None:
    import time

    from fedforget.cost import phase

    _, dataset = _memorise()
    model = models.build_model("auto", dataset.info, seed=0)
    x = torch.tensor(dataset.x_train[:10])
    with count_sample_passes() as passes:
        with phase("outer"):
            model(x)  # 10 forwards + 10 backwards (grad mode on)
            with phase("inner"), torch.no_grad():
                model(x[:4])
                time.sleep(0.05)
        model(x[:3])
    assert passes.by_phase == {"outer": 20, "inner": 4, "other": 6}
    assert sum(passes.by_phase.values()) == passes.total
    assert passes.seconds_by_phase["inner"] >= 0.05 > passes.seconds_by_phase["outer"]
    assert list(passes.profile()) == ["outer", "other", "inner"]
