"""Shokri et al. (S&P 2017) membership inference: an attack classifier on the shadows' outputs.

Fitting: every shadow model is queried on every auxiliary sample; the feature vector
(:func:`fedforget.mia.features.features_from_logits`) of a sample the shadow trained on is labelled 1
(member), of one it did not train on 0. The features are standardised (mean / std over all these
rows; constant columns get std 1) and an attack network is trained on them in torch:
``Linear(13, HIDDEN) -> ReLU -> Linear(HIDDEN, 1)``, binary cross-entropy, full-batch Adam
(:data:`EPOCHS` steps, learning rate :data:`LEARNING_RATE`, weight decay :data:`WEIGHT_DECAY`),
seeded. Score = the attack network's sigmoid output (estimated probability of membership).

Modes:

* ``"global"``: one attack network for all samples.
* ``"per-class"``: one attack network per true class, as in the original paper, trained on the rows
  of that class only; a class with fewer than :data:`MIN_CLASS_ROWS` member or non-member rows uses
  the global network (which is always trained).

:data:`DEFAULT_MODE` is the mode measured stronger by ``simulations/attack_strength.py`` (see
``docs/forgetting-rate.md``). The threshold is :func:`fedforget.mia.strength.youden_threshold` of
the fitted oracle's scores on the very rows it was trained on (the attack net has ~1k parameters
and is fitted on thousands of rows, so these scores are close to held-out ones).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from fedforget.mia import STATE_FORMAT, MembershipOracle, ModelFactory, check_state
from fedforget.mia.features import NUM_FEATURES, features_from_logits, model_logits
from fedforget.mia.shadow import ShadowModel
from fedforget.mia.strength import youden_threshold

__all__ = ["DEFAULT_MODE", "MODES", "ShokriOracle"]

MODES = ("global", "per-class")
DEFAULT_MODE = "global"
"""The stronger mode on the measured targets (docs/forgetting-rate.md, "Attack strength")."""
HIDDEN = 64
EPOCHS = 300
LEARNING_RATE = 0.01
WEIGHT_DECAY = 1e-4
MIN_CLASS_ROWS = 50
"""A class gets its own attack network in per-class mode only with this many member and non-member rows."""

_ATTACK_SEED = 97


def _attack_net(hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(NUM_FEATURES, hidden), nn.ReLU(), nn.Linear(hidden, 1)).double()


def _train_attack(features: np.ndarray, labels: np.ndarray, hidden: int, seed: int) -> nn.Sequential:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = _attack_net(hidden)
    xt = torch.from_numpy(features)
    yt = torch.from_numpy(labels.astype(np.float64))
    # weight the classes equally (members and non-members are balanced only on average)
    num_members = float(labels.sum())
    pos_weight = torch.tensor((len(labels) - num_members) / max(num_members, 1.0), dtype=torch.float64)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    optimizer = torch.optim.Adam(net.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    net.train()
    for _ in range(EPOCHS):
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(net(xt).squeeze(1), yt)
        loss.backward()
        optimizer.step()
    net.eval()
    return net


class ShokriOracle(MembershipOracle):
    """Shokri et al.'s attack classifier (see the module docstring)."""

    name: ClassVar[str] = "shokri"

    def __init__(
        self,
        mode: str,
        mean: np.ndarray,
        std: np.ndarray,
        global_net: nn.Sequential,
        class_nets: Mapping[int, nn.Sequential],
        num_classes: int,
        threshold: float,
        hidden: int = HIDDEN,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown Shokri mode {mode!r}; choose one of: {', '.join(MODES)}")
        self.mode = mode
        self.mean = np.asarray(mean, dtype=np.float64)
        self.std = np.asarray(std, dtype=np.float64)
        self.global_net = global_net
        self.class_nets = dict(class_nets)
        self.num_classes = int(num_classes)
        self.threshold = float(threshold)
        self.hidden = int(hidden)
        self.calibration_scores: np.ndarray | None = None
        """Scores of the shadows' in/out rows the threshold was chosen on (set by :meth:`fit` only)."""
        self.calibration_labels: np.ndarray | None = None

    # ------------------------------------------------------------------------------ fitting
    @classmethod
    def fit(
        cls,
        shadows: Sequence[ShadowModel],
        x_aux: np.ndarray,
        y_aux: np.ndarray,
        *,
        mode: str | None = None,
        seed: int = 0,
    ) -> ShokriOracle:
        """Fit the attack on the shadows' in/out auxiliary samples."""
        mode = DEFAULT_MODE if mode is None else str(mode).strip().lower()
        if mode not in MODES:
            raise ValueError(f"unknown Shokri mode {mode!r}; choose one of: {', '.join(MODES)}")
        x_aux, y_aux = cls._inputs(x_aux, y_aux)
        if not shadows:
            raise ValueError("no shadow models")
        feats, labels, classes, num_classes = [], [], [], None
        for shadow in shadows:
            if len(shadow.in_mask) != len(x_aux):
                raise ValueError(
                    f"a shadow's in_mask has {len(shadow.in_mask)} entries but there are {len(x_aux)} "
                    "auxiliary samples (shadows must be trained on this auxiliary data)"
                )
            logits = model_logits(shadow.model, x_aux)
            num_classes = logits.shape[1]
            feats.append(features_from_logits(logits, y_aux))
            labels.append(np.asarray(shadow.in_mask, dtype=bool))
            classes.append(y_aux)
        features = np.concatenate(feats)
        member = np.concatenate(labels)
        true_class = np.concatenate(classes)
        if member.all() or not member.any():
            raise ValueError("the shadows' data must include both members and non-members")
        mean = features.mean(axis=0)
        std = features.std(axis=0)
        std = np.where(std > 1e-12, std, 1.0)
        z = (features - mean) / std
        global_net = _train_attack(z, member, HIDDEN, seed * 1000 + _ATTACK_SEED)
        class_nets: dict[int, nn.Sequential] = {}
        if mode == "per-class":
            for c in range(int(num_classes or 0)):
                rows = true_class == c
                n_in, n_out = int(member[rows].sum()), int((~member[rows]).sum())
                if min(n_in, n_out) >= MIN_CLASS_ROWS:
                    class_nets[c] = _train_attack(
                        z[rows], member[rows], HIDDEN, seed * 1000 + _ATTACK_SEED + c + 1
                    )
        oracle = cls(mode, mean, std, global_net, class_nets, int(num_classes or 0), 0.5, HIDDEN)
        scores = oracle._score_features(features, true_class)
        oracle.threshold = youden_threshold(scores, member)
        oracle.calibration_scores, oracle.calibration_labels = scores, member
        return oracle

    # ------------------------------------------------------------------------------ scoring
    @torch.no_grad()
    def _score_features(self, features: np.ndarray, y: np.ndarray) -> np.ndarray:
        z = torch.from_numpy((features - self.mean) / self.std)
        out = torch.sigmoid(self.global_net(z).squeeze(1))
        for c, net in self.class_nets.items():
            rows = torch.from_numpy(y == c)
            if rows.any():
                out[rows] = torch.sigmoid(net(z[rows]).squeeze(1))
        return out.numpy().astype(np.float64)

    def scores(self, model: nn.Module, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        x, y = self._inputs(x, y)
        logits = model_logits(model, x)
        if logits.shape[1] != self.num_classes:
            raise ValueError(
                f"the model has {logits.shape[1]} outputs, the oracle expects {self.num_classes} classes"
            )
        return self._score_features(features_from_logits(logits, y), y)

    # ------------------------------------------------------------------------------ state
    def to_state(self) -> tuple[dict[str, np.ndarray], dict[str, int | float | str | bool]]:
        arrays: dict[str, np.ndarray] = {
            "mean": self.mean.copy(),
            "std": self.std.copy(),
            "class_models": np.array(sorted(self.class_nets), dtype=np.int64),
        }
        for key, value in self.global_net.state_dict().items():
            arrays[f"global/{key}"] = value.detach().cpu().numpy().copy()
        for c, net in sorted(self.class_nets.items()):
            for key, value in net.state_dict().items():
                arrays[f"class/{c}/{key}"] = value.detach().cpu().numpy().copy()
        config: dict[str, int | float | str | bool] = {
            "name": self.name,
            "format": STATE_FORMAT,
            "mode": self.mode,
            "threshold": self.threshold,
            "num_classes": self.num_classes,
            "num_features": NUM_FEATURES,
            "hidden": self.hidden,
        }
        return arrays, config

    @classmethod
    def from_state(
        cls, arrays: Mapping[str, np.ndarray], config: Mapping[str, Any], model_factory: ModelFactory | None
    ) -> ShokriOracle:
        """Rebuild from :meth:`to_state` (``model_factory`` is not needed: the attack is self-contained)."""
        check_state(arrays, config)
        if config.get("name") != cls.name:
            raise ValueError(f"state of oracle {config.get('name')!r}, not {cls.name!r}")
        if int(config.get("num_features", -1)) != NUM_FEATURES:
            raise ValueError(
                f"state has {config.get('num_features')} features; this version computes {NUM_FEATURES}"
            )
        hidden = int(config["hidden"])

        def load(prefix: str) -> nn.Sequential:
            net = _attack_net(hidden)
            wanted = net.state_dict()
            missing = [k for k in wanted if prefix + k not in arrays]
            if missing:
                raise ValueError(f"oracle state lacks {', '.join(prefix + k for k in missing)}")
            net.load_state_dict({k: torch.from_numpy(np.array(arrays[prefix + k])) for k in wanted})
            net.eval()
            return net

        class_nets = {int(c): load(f"class/{int(c)}/") for c in np.asarray(arrays["class_models"])}
        return cls(
            str(config["mode"]),
            np.asarray(arrays["mean"], dtype=np.float64),
            np.asarray(arrays["std"], dtype=np.float64),
            load("global/"),
            class_nets,
            int(config["num_classes"]),
            float(config["threshold"]),
            hidden,
        )
