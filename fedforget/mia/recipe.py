"""The server's membership-oracle recipe: one function that every caller uses to build the same oracle.

The server (``server/evaluator.py``) and the benchmarks train the oracle that judges a run's forget
sets from the run config alone: shadow models with the global model's architecture and training recipe
(``learning-rate``, ``batch-size``, ``momentum``, ``weight-decay``, ``effective_shadow_epochs``)
on the server's auxiliary split (``split.aux_ids``), ``num-shadows`` of them, seeded with the run seed,
then the ``oracle`` kind (``shokri`` or ``lira``) fitted on their in/out samples
(:func:`fedforget.mia.fit_oracle`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from fedforget.mia import MembershipOracle, fit_oracle

if TYPE_CHECKING:
    from torch import nn

    from fedforget.config import RunConfig
    from fedforget.data import Dataset
    from fedforget.splits import Split

__all__ = ["fit_oracle_for", "oracle_model_factory"]


def oracle_model_factory(config: RunConfig, dataset: Dataset) -> Any:
    """``() -> nn.Module``: a fresh model of the run's architecture (what shadows and LiRA rebuild)."""
    from fedforget import models

    def factory() -> nn.Module:
        return models.build_model(config.model, dataset.info)

    return factory


def fit_oracle_for(
    config: RunConfig,
    dataset: Dataset,
    split: Split,
    *,
    progress: bool | None = False,
) -> MembershipOracle:
    """The run's membership oracle, trained on ``dataset.x_train[split.aux_ids]`` as the server does it.

    ``config.model`` must already be resolved (not ``"auto"``): the shadows copy the global model's
    architecture. Raises ValueError when the run has no auxiliary data (``aux-fraction`` = 0).
    """
    if config.model == "auto":
        raise ValueError("fit_oracle_for needs a resolved model name, got 'auto' (resolve_model_name first)")
    aux = np.asarray(split.aux_ids, dtype=np.int64)
    if len(aux) == 0:
        raise ValueError(
            "the server's membership oracle needs auxiliary data: aux-fraction is 0, so there is none"
        )
    return fit_oracle(
        config.oracle,
        oracle_model_factory(config, dataset),
        dataset.x_train[aux],
        dataset.y_train[aux],
        num_shadows=config.num_shadows,
        epochs=config.effective_shadow_epochs,
        learning_rate=config.learning_rate,
        batch_size=config.batch_size,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
        seed=config.seed,
        progress=progress,
    )
