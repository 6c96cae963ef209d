"""Search objectives, scored on dev data only.

An objective merges a candidate into one or more live models (one per dev fold: ingredients fine-tuned on
train scored on dev, and, when cross-fitting, ingredients fine-tuned on dev scored on train) and scores
them. Lower is better: the loss as is, metrics negated. An objective may mix several
(``{"calibrated_loss": 1, "weighted_f1": 0.5}``). An optional penalty pulls weights towards uniform,
towards an anchor, or towards zero (L1).

With ``merge.head: refit`` a fold refits its model's head after every merge (:class:`dfwe.merge.fold.DevFold`),
so the search weighs bodies only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from dfwe.data.metrics import score
from dfwe.data.shapes import check_metric
from dfwe.errors import BadInput
from dfwe.merge.fold import DevFold
from dfwe.stats import LOWER_IS_BETTER

PENALTIES = ("none", "l1", "uniform", "anchor")


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
        if not folds or any(len(fold.data.examples) == 0 for fold in folds):
            raise BadInput("the dev set is empty: the search needs dev examples to score candidates")
        mix = mix or {metric: 1.0}
        for name in mix:
            check_metric(name, folds[0].data.task.shape, "objective", folds[0].data.task.name)
        if penalty not in PENALTIES:
            raise BadInput(f"penalty: unknown penalty '{penalty}' (use {', '.join(PENALTIES)})")
        if penalty == "anchor" and strength > 0 and anchor is None:
            raise BadInput("penalty 'anchor' needs anchor weights")
        self.folds, self.method, self.mix = list(folds), method, mix
        self.penalty, self.strength, self.anchor, self.batch_size = penalty, strength, anchor, batch_size
        # A low-fidelity score reads a fixed seeded slice of each fold, the same slice for every candidate.
        rng = np.random.default_rng([seed, 0xF1D])
        self._orders = [rng.permutation(len(fold.data.examples)) for fold in self.folds]

    def __call__(self, weights: np.ndarray, fidelity: float = 1.0) -> Score:
        start = time.perf_counter()
        weights = np.atleast_2d(weights)
        per_fold, sizes = [], []
        for fold, order in zip(self.folds, self._orders):
            fold.merge(self.method, weights)
            data = fold.data if fidelity >= 1.0 else fold.data.subset(order[: max(1, round(len(order) * fidelity))])
            per_fold.append(score(fold.logits(data, self.batch_size), data))
            sizes.append(len(data.examples))
        # folds pool in proportion to their examples (cross-fitting: dev-scored and train-scored folds)
        metrics = {name: float(np.average([m[name] for m in per_fold], weights=sizes)) for name in per_fold[0]}
        value = sum(weight * (metrics[name] if name in LOWER_IS_BETTER else -metrics[name])
                    for name, weight in self.mix.items())
        value += penalty_value(weights, self.penalty, self.strength, self.anchor)
        return Score(value=float(value), metrics=metrics, seconds=time.perf_counter() - start)
