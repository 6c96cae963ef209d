"""Search objectives, scored on dev data only.

An objective merges a candidate into one or more live models (one per dev fold: e.g. ingredients
fine-tuned on train scored on dev, and, when cross-fitting, ingredients fine-tuned on dev scored on
train) and pools their predictions into one score. Lower is better: the loss as is, metrics negated.
An objective may mix several (``{"loss": 1, "weighted_f1": 0.5}``). An optional penalty pulls weights
towards uniform, towards an anchor, or towards zero (L1).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from transformers import PreTrainedModel

from dfwe.data.encode import EncodedSet
from dfwe.errors import BadInput
from dfwe.eval.metrics import LOWER_IS_BETTER, score_logits
from dfwe.eval.predict import predict_logits
from dfwe.merge.space import WeightSpace
from dfwe.models import load_classifier, resolve_device

OBJECTIVES = ("loss", "calibrated_loss", "accuracy", "weighted_f1", "macro_f1")
PENALTIES = ("none", "l1", "uniform", "anchor")


@dataclass
class DevFold:
    """A weight space bound to its live model, and the held-out examples that model is scored on."""

    space: WeightSpace
    model: PreTrainedModel
    data: EncodedSet


@dataclass(frozen=True)
class FoldSpec:
    """How to build a :class:`DevFold` anywhere (in this process, or in a Ray worker)."""

    checkpoints: tuple[Path, ...]
    data: EncodedSet
    base: Path | None = None
    device: str = "auto"

    def build(self) -> DevFold:
        space = WeightSpace.from_checkpoints(list(self.checkpoints), base=self.base, device=resolve_device(self.device))
        model = load_classifier(self.checkpoints[0]).to(space.live.device)
        space.bind(model)
        return DevFold(space, model, self.data)


@dataclass(frozen=True)
class Score:
    """One candidate's objective value and every metric behind it."""

    value: float
    metrics: dict[str, float]
    seconds: float


def penalty_value(weights: np.ndarray, kind: str, strength: float, anchor: np.ndarray | None = None) -> float:
    """The penalty added to the objective for ``weights`` (``[groups, ingredients]``)."""
    if kind == "none" or strength == 0:
        return 0.0
    if kind == "l1":
        return strength * float(np.abs(weights).mean())
    if kind == "uniform":
        return strength * float(((weights - 1.0 / weights.shape[1]) ** 2).sum(axis=1).mean())
    if kind == "anchor":
        if anchor is None:
            raise BadInput("penalty 'anchor' needs anchor weights")
        return strength * float(((weights - anchor) ** 2).sum(axis=1).mean())
    raise BadInput(f"penalty: unknown penalty '{kind}' (use {', '.join(PENALTIES)})")


class Objective:
    """Callable ``weights -> Score`` over one or more dev folds."""

    def __init__(self, folds: Sequence[DevFold], method: str = "linear", metric: str = "loss", penalty: str = "none",
                 strength: float = 0.0, anchor: np.ndarray | None = None, batch_size: int = 64, seed: int = 0,
                 mix: dict[str, float] | None = None):
        mix = mix or {metric: 1.0}
        for name in mix:
            if name not in OBJECTIVES:
                raise BadInput(f"objective: unknown objective '{name}' (use {', '.join(OBJECTIVES)})")
        if penalty not in PENALTIES:
            raise BadInput(f"penalty: unknown penalty '{penalty}' (use {', '.join(PENALTIES)})")
        if not folds or any(len(fold.data) == 0 for fold in folds):
            raise BadInput("the dev set is empty: the search needs dev examples to score candidates")
        self.folds, self.method, self.mix = list(folds), method, mix
        self.penalty, self.strength, self.anchor, self.batch_size = penalty, strength, anchor, batch_size
        self.num_classes = folds[0].model.config.num_labels
        # A low-fidelity score reads a fixed seeded slice of each fold, the same slice for every candidate.
        rng = np.random.default_rng([seed, 0xF1D])
        self._orders = [rng.permutation(len(fold.data)) for fold in self.folds]

    def __call__(self, weights: np.ndarray, fidelity: float = 1.0) -> Score:
        start = time.perf_counter()
        weights = np.atleast_2d(weights)
        logits, gold = [], []
        for fold, order in zip(self.folds, self._orders):
            fold.space.apply(self.method, weights)
            data = fold.data if fidelity >= 1.0 else fold.data.subset(order[: max(1, round(len(order) * fidelity))])
            logits.append(predict_logits(fold.model, data, self.batch_size))
            gold.append(data.labels.numpy())
        metrics = score_logits(np.concatenate(logits), np.concatenate(gold), self.num_classes)
        value = sum(weight * (metrics[name] if name in LOWER_IS_BETTER else -metrics[name])
                    for name, weight in self.mix.items())
        value += penalty_value(weights, self.penalty, self.strength, self.anchor)
        return Score(value=float(value), metrics=metrics, seconds=time.perf_counter() - start)
