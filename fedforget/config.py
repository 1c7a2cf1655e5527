"""Run configuration: one typed, validated object for every run.

The Flower run config (``[tool.flwr.app.config]`` in ``pyproject.toml``, ``--run-config`` on the
command line) uses kebab-case keys; :class:`RunConfig` holds the same values with snake_case
attribute names. ``RunConfig.from_mapping`` validates everything up front and raises
:class:`ConfigError` with a message that names the key, the bad value and what is allowed.
``RunConfig.to_dict`` gives the kebab-case mapping written to ``config.json``.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

PARTITIONINGS = ("iid", "dirichlet", "pathological")
ORACLES = ("shokri", "lira")
JUDGE_ATTACKS = ("loss", "shokri", "lira")
"""The attacks of the server's judge (``fedforget.judge``); ``judge-attacks`` lists some, headline first."""
UNLEARN_METHODS = ("forsaken", "gradient-ascent", "pga", "finetune", "retrain", "federaser")
"""Methods the Flower server runs (``docs/baselines.md``); sisa and amnesiac are library-only."""
ACCURACY_BUDGETS = {"forsaken": 0.05, "finetune": 0.05}
"""``max-accuracy-drop = -1``: the accuracy an attempt of the method may cost. Forsaken's own guard
keeps the device's accuracy loss within 0.03 and finetune trains on the remaining data: neither
honestly costs more than 0.05 of test accuracy. Gradient-ascent and pga give up accuracy by design
(the training rounds after them repair it); retrain and federaser rebuild the model from the
remaining data, so the accuracy they reach is the method's answer: for these the budget is 1 and the
server checks only that the model's outputs are finite."""
UNLEARN_TARGETS = ("fr", "retrain")
CLIENT_DATA = ("shared", "own")
"""``shared``: devices compute their partition from ``dataset`` (simulation); ``own``: each device
reads its own file (node config ``data``) and ``dataset`` is the server's auxiliary/test data only."""


class ConfigError(ValueError):
    """An invalid configuration value: the message says which key and what is allowed."""


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything that determines a run (data, model, split, training, seeds, output place)."""

    dataset: str = "digits"
    data_dir: str = ""
    model: str = "auto"
    num_clients: int = 5
    partitioning: str = "iid"
    alpha: float = 0.5
    classes_per_client: int = 2
    aux_fraction: float = 0.2
    holdout_fraction: float = 0.2
    max_train_samples: int = 0
    num_rounds: int = 5
    local_epochs: int = 3
    learning_rate: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 16
    clients_per_round: int = 0
    seed: int = 0
    run_dir: str = ""
    run_id: str = ""
    checkpoint_every: int = 0
    withdrawals: str = ""
    oracle: str = "shokri"
    judge_attacks: str = "loss,shokri,lira"
    num_shadows: int = 4
    shadow_epochs: int = 0
    log_messages: int = 0
    unlearn_method: str = "forsaken"
    unlearn_target: str = "fr"
    target_fr: float = 0.9
    unlearn_rounds: int = 3
    forsaken_steps: int = 30
    ascent_steps: int = 50
    federaser_every: int = 1
    retain_samples: int = 512
    steer_reference_samples: int = 512
    max_mask_ratio: float = 0.5
    max_update_ratio: float = 100.0
    max_accuracy_drop: float = -1.0
    ledger: str = ""
    resume: int = 0
    retrain_reference: int = 0
    client_data: str = "shared"
    min_forget_samples: int = 8

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None = None, **overrides: Any) -> RunConfig:
        """Build a validated config from kebab-case (or snake_case) keys; unknown keys are errors."""
        merged: dict[str, Any] = {}
        for source in (values or {}), overrides:
            for key, value in source.items():
                merged[_attr_name(str(key))] = value
        fields = {f.name: f for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for name, value in merged.items():
            if name not in fields:
                kebab = name.replace("_", "-")
                close = difflib.get_close_matches(kebab, [n.replace("_", "-") for n in fields], n=1)
                hint = f" Did you mean '{close[0]}'?" if close else ""
                raise ConfigError(f"Unknown config key '{kebab}'.{hint}")
            kwargs[name] = _coerce(name, value, fields[name].type)
        config = cls(**kwargs)
        config.validate()
        return config

    def replace(self, **changes: Any) -> RunConfig:
        """A validated copy with some values changed (snake_case names)."""
        config = dataclasses.replace(self, **changes)
        config.validate()
        return config

    def to_dict(self) -> dict[str, Any]:
        """The kebab-case mapping (what ``config.json`` stores and Flower's run config uses)."""
        return {f.name.replace("_", "-"): getattr(self, f.name) for f in dataclasses.fields(self)}

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raise :class:`ConfigError` on the first invalid value."""
        _require(bool(self.dataset.strip()), "dataset", self.dataset, "a dataset name or csv:/npz: path")
        _require(self.num_clients >= 1, "num-clients", self.num_clients, "an integer >= 1")
        _require(
            self.partitioning in PARTITIONINGS,
            "partitioning",
            self.partitioning,
            f"one of {', '.join(PARTITIONINGS)}",
        )
        _require(
            0 < self.alpha < math.inf, "alpha", self.alpha, "a finite number > 0 (Dirichlet concentration)"
        )
        _require(self.classes_per_client >= 1, "classes-per-client", self.classes_per_client, ">= 1")
        _require(0 <= self.aux_fraction < 1, "aux-fraction", self.aux_fraction, "in [0, 1)")
        _require(0 <= self.holdout_fraction < 1, "holdout-fraction", self.holdout_fraction, "in [0, 1)")
        _require(self.max_train_samples >= 0, "max-train-samples", self.max_train_samples, ">= 0 (0 = all)")
        _require(self.num_rounds >= 1, "num-rounds", self.num_rounds, "an integer >= 1")
        _require(self.local_epochs >= 1, "local-epochs", self.local_epochs, "an integer >= 1")
        _require(
            0 < self.learning_rate < math.inf, "learning-rate", self.learning_rate, "a finite number > 0"
        )
        _require(0 <= self.momentum < 1, "momentum", self.momentum, "in [0, 1)")
        _require(0 <= self.weight_decay < math.inf, "weight-decay", self.weight_decay, "a finite number >= 0")
        _require(self.batch_size >= 1, "batch-size", self.batch_size, "an integer >= 1")
        _require(
            0 <= self.clients_per_round <= self.num_clients,
            "clients-per-round",
            self.clients_per_round,
            f"between 0 (= all) and num-clients ({self.num_clients})",
        )
        _require(self.seed >= 0, "seed", self.seed, "an integer >= 0")
        _require(
            self.unlearn_method in UNLEARN_METHODS,
            "unlearn-method",
            self.unlearn_method,
            f"one of {', '.join(UNLEARN_METHODS)} (sisa and amnesiac run only in the library)",
        )
        _require(
            self.unlearn_target in UNLEARN_TARGETS,
            "unlearn-target",
            self.unlearn_target,
            "'fr' (stop at target-fr) or 'retrain' (stop when the forget set looks never seen)",
        )
        _require(0 < self.target_fr <= 1, "target-fr", self.target_fr, "in (0, 1]")
        _require(self.unlearn_rounds >= 1, "unlearn-rounds", self.unlearn_rounds, "an integer >= 1")
        _require(self.forsaken_steps >= 1, "forsaken-steps", self.forsaken_steps, "an integer >= 1")
        _require(
            self.ascent_steps >= 1,
            "ascent-steps",
            self.ascent_steps,
            "an integer >= 1 (step budget of gradient-ascent / pga on the client)",
        )
        _require(
            self.federaser_every >= 1,
            "federaser-every",
            self.federaser_every,
            "an integer >= 1 (FedEraser stores client updates every this many rounds)",
        )
        _require(self.retain_samples >= 1, "retain-samples", self.retain_samples, "an integer >= 1")
        _require(
            self.steer_reference_samples >= 0,
            "steer-reference-samples",
            self.steer_reference_samples,
            "an integer >= 0 (0: devices steer by their own held-out samples only)",
        )
        _require(
            0 < self.max_mask_ratio < math.inf,
            "max-mask-ratio",
            self.max_mask_ratio,
            "a finite number > 0 (largest mask L2 norm, relative to the model's)",
        )
        _require(
            0 < self.max_update_ratio < math.inf,
            "max-update-ratio",
            self.max_update_ratio,
            "a finite number > 0 (largest training-update L2 norm, relative to the model's)",
        )
        _require(
            self.max_accuracy_drop == -1 or 0 <= self.max_accuracy_drop <= 1,
            "max-accuracy-drop",
            self.max_accuracy_drop,
            "a number in [0, 1] (the most test accuracy an unlearning attempt may cost before it commits) "
            "or -1 (the unlearn-method's own budget)",
        )
        _require(self.log_messages in (0, 1), "log-messages", self.log_messages, "0 or 1")
        _require(self.resume in (0, 1), "resume", self.resume, "0 or 1 (1: continue run-id's record)")
        _require(
            self.retrain_reference in (0, 1),
            "retrain-reference",
            self.retrain_reference,
            "0 or 1 (1: after each unlearning, retrain without the withdrawn data in the server process "
            "and judge it with the same oracle; simulation only)",
        )
        _require(
            self.client_data in CLIENT_DATA,
            "client-data",
            self.client_data,
            "'shared' (devices split dataset among themselves) or 'own' (each device reads its own file)",
        )
        _require(
            self.client_data == "shared" or self.retrain_reference == 0,
            "retrain-reference",
            self.retrain_reference,
            "0 with client-data=own (the server holds no client data to retrain on)",
        )
        _require(
            self.min_forget_samples >= 1,
            "min-forget-samples",
            self.min_forget_samples,
            "an integer >= 1 (a device's unlearning mask mixes at least this many samples)",
        )
        _require(
            self.resume == 0 or bool(self.run_id),
            "resume",
            self.resume,
            "resume=1 together with the run-id of the run to continue",
        )
        _require(
            self.ledger == "" or Path(self.ledger).is_absolute(),
            "ledger",
            self.ledger,
            "an absolute path to the server's SQLite ledger ('' = <run-dir>/ledger.sqlite)",
        )
        _require(self.checkpoint_every >= 0, "checkpoint-every", self.checkpoint_every, ">= 0")
        _require(self.oracle in ORACLES, "oracle", self.oracle, f"one of {', '.join(ORACLES)}")
        _require(self.num_shadows >= 2, "num-shadows", self.num_shadows, "an integer >= 2")
        attacks = [a.strip() for a in self.judge_attacks.split(",")]
        _require(
            bool(attacks)
            and all(a in JUDGE_ATTACKS for a in attacks)
            and len(set(attacks)) == len(attacks)
            and (attacks[0] != "lira" or self.num_shadows >= 3),
            "judge-attacks",
            self.judge_attacks,
            f"a comma-separated list of distinct attacks from {', '.join(JUDGE_ATTACKS)}, the headline "
            "first (lira needs num-shadows >= 3; with fewer shadows it is left out, so it cannot lead)",
        )
        _require(
            self.oracle != "lira" or self.num_shadows >= 3,
            "num-shadows",
            self.num_shadows,
            ">= 3 with oracle=lira (each sample needs shadows that did not train on it)",
        )
        _require(
            self.shadow_epochs >= 0, "shadow-epochs", self.shadow_epochs, ">= 0 (0 = as the global model)"
        )
        from fedforget.withdrawals import WithdrawalError, check_schedule, parse_schedule

        try:
            check_schedule(parse_schedule(self.withdrawals), self.num_clients, self.num_rounds)
        except WithdrawalError as error:
            raise ConfigError(f"Invalid value for 'withdrawals': {error}") from None
        _require(
            self.run_dir == "" or Path(self.run_dir).is_absolute(),
            "run-dir",
            self.run_dir,
            "an absolute path (Flower runs the app from a copy, so relative paths are ambiguous)",
        )
        _require(
            "/" not in self.run_id and self.run_id not in (".", ".."),
            "run-id",
            self.run_id,
            "a plain folder name",
        )

    @property
    def withdrawal_requests(self) -> tuple:  # tuple[WithdrawalRequest, ...]
        """The parsed ``withdrawals`` schedule."""
        from fedforget.withdrawals import parse_schedule

        return parse_schedule(self.withdrawals)

    @property
    def effective_shadow_epochs(self) -> int:
        """Epochs a shadow model trains: ``shadow-epochs``, or as many as a client's data sees
        over the run (``num-rounds x local-epochs``, at most 50)."""
        return self.shadow_epochs or min(50, self.num_rounds * self.local_epochs)

    @property
    def effective_max_accuracy_drop(self) -> float:
        """The test accuracy an unlearning attempt may cost before it commits: ``max-accuracy-drop``,
        or (-1) the method's own budget, :data:`ACCURACY_BUDGETS` (1 = no accuracy bound)."""
        if self.max_accuracy_drop >= 0:
            return self.max_accuracy_drop
        return ACCURACY_BUDGETS.get(self.unlearn_method, 1.0)

    @property
    def effective_clients_per_round(self) -> int:
        """Clients sampled per training round (``clients-per-round`` = 0 means all)."""
        return self.clients_per_round or self.num_clients


def _attr_name(key: str) -> str:
    return key.strip().replace("-", "_")


def _require(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"Invalid value for '{key}': {value!r}; expected {allowed}.")


def _coerce(name: str, value: Any, annotation: Any) -> Any:
    key = name.replace("_", "-")
    kind = {"int": int, "float": float, "str": str}.get(str(annotation), str)
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"Invalid value for '{key}': {value!r}; expected a string.")
        return value
    if isinstance(value, bool):
        raise ConfigError(f"Invalid value for '{key}': {value!r}; expected a number.")
    try:
        if kind is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        return float(value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(
            f"Invalid value for '{key}': {value!r}; expected {'an integer' if kind is int else 'a number'}."
        ) from None
