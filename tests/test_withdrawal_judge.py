"""The benchmarks' withdrawal judge (simulations/withdrawal_judge.py): its owner-held-out diagnostic reads
the withdrawing clients' held-out samples, and no one else's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedforget import data, models
from fedforget.client_data import ClientData, split_for
from fedforget.config import RunConfig
from fedforget.metrics import attack_auc
from simulations.withdrawal_judge import WithdrawalJudge


def _p_y(model: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The loss attack's score: the confidence in the true label."""
    with torch.no_grad():
        p = torch.softmax(model(torch.as_tensor(x, dtype=torch.float32)).double(), dim=1)
    return p.gather(1, torch.as_tensor(y, dtype=torch.long).view(-1, 1)).view(-1).numpy()


@pytest.fixture(scope="module")
def run() -> tuple[RunConfig, list[ClientData], torch.nn.Module, WithdrawalJudge]:
    config = RunConfig(dataset="memorise", num_clients=3, judge_attacks="loss", seed=4)
    dataset = data.load(config)
    clients = [ClientData.for_partition(config, k) for k in range(config.num_clients)]
    model = models.build_model(models.resolve_model_name("auto", dataset.info), dataset.info, seed=1).eval()
    judge = WithdrawalJudge.fit(
        config, dataset, split_for(config), clients, withdrawn={0: clients[0].train_ids[:9]}
    )
    return config, clients, model, judge


@pytest.mark.parametrize("owner", [0, 2])
def test_owner_heldout_auc_scores_the_forget_set_against_the_owners_heldout_samples_only(
    run: tuple[RunConfig, list[ClientData], torch.nn.Module, WithdrawalJudge], owner: int
) -> None:
    _, clients, model, judge = run
    forget_ids = clients[owner].train_ids[:9]
    judged = judge.with_withdrawn({owner: forget_ids})
    _, x_forget, y_forget = clients[owner].subset(forget_ids)
    forget = _p_y(model, x_forget, y_forget)
    expected = attack_auc(forget, _p_y(model, clients[owner].x_holdout, clients[owner].y_holdout))
    assert judged.owner_heldout_auc(model)["loss"] == pytest.approx(expected, abs=1e-12)
    # scored against anyone else's held-out samples, the same forget set gets another AUC
    for other in (k for k in range(len(clients)) if k != owner):
        elsewhere = attack_auc(forget, _p_y(model, clients[other].x_holdout, clients[other].y_holdout))
        assert elsewhere != pytest.approx(expected, abs=1e-9)
