"""Search objectives, scored on dev data only.

An objective merges a candidate into one or more live models (one per dev fold: ingredients fine-tuned on
train scored on dev, and, when cross-fitting, ingredients fine-tuned on dev scored on train) and scores
them. Lower is better: the loss as is, metrics negated. An objective may mix several
(``{"calibrated_loss": 1, "weighted_f1": 0.5}``). An optional penalty pulls weights towards uniform,
towards an anchor, or towards zero (L1).

With ``merge.head: refit`` a fold refits its model's head on the merged body's features of the fold's
*train* examples after every merge (:meth:`DevFold.merge`), so the search weighs bodies only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from dfwe.data.encode import ExampleSet
from dfwe.errors import BadInput
from dfwe.eval.metrics import LOWER_IS_BETTER, score
from dfwe.eval.predict import predict_logits
from dfwe.merge.space import WeightSpace
from dfwe.modeling import DfwePreTrainedModel
from dfwe.models import load_model, resolve_device

OBJECTIVES = ("loss", "calibrated_loss", "accuracy", "weighted_f1", "macro_f1", "micro_f1", "token_f1",
              "exact_match")
PENALTIES = ("none", "l1", "uniform", "anchor")


@dataclass
class DevFold:
    """A weight space bound to its live model, the examples it is scored on, and how its head is set."""

    space: WeightSpace
    model: DfwePreTrainedModel
    data: ExampleSet
    head_train: ExampleSet | None = None  # refit: the examples the head is fitted on after every merge
    probe_c: float = 1.0

    def merge(self, method: str, weights: np.ndarray, refit: bool = True) -> None:
        """Write the merge into the live model (and, with ``head_train`` and ``refit``, refit its head; a single
        ingredient is scored with ``refit=False``: as it was trained, with its own head)."""
        self.space.apply(method, weights)
        if refit and self.head_train is not None:
            from dfwe.train.loop import fit_head

            fit_head(self.model, self.head_train.shape, self.head_train.encoded, self.probe_c)

    def logits(self, data: ExampleSet, batch_size: int = 64) -> np.ndarray:
        """The live model's outputs on ``data``."""
        return predict_logits(self.model, data.shape, data.encoded, batch_size)


@dataclass(frozen=True)
class FoldSpec:
    """How to build a :class:`DevFold` anywhere (in this process, or in a Ray worker)."""

    checkpoints: tuple[Path, ...]
    data: ExampleSet
    base: Path | None = None
    device: str = "auto"
    head_train: ExampleSet | None = None
    probe_c: float = 1.0

    def build(self) -> DevFold:
        space = WeightSpace.from_checkpoints(list(self.checkpoints), base=self.base, device=resolve_device(self.device))
        model = load_model(self.checkpoints[0]).to(space.live.device)
        space.bind(model)
        return DevFold(space, model, self.data, self.head_train, self.probe_c)


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
        metrics = {"loss", "calibrated_loss", *folds[0].data.shape.metrics} if folds else set(OBJECTIVES)
        for name in mix:
            if name not in metrics:
                raise BadInput(f"objective: '{name}' is not a metric of this task (use {', '.join(sorted(metrics))})")
        if penalty not in PENALTIES:
            raise BadInput(f"penalty: unknown penalty '{penalty}' (use {', '.join(PENALTIES)})")
        if penalty == "anchor" and strength > 0 and anchor is None:
            raise BadInput("penalty 'anchor' needs anchor weights")
        if not folds or any(len(fold.data.examples) == 0 for fold in folds):
            raise BadInput("the dev set is empty: the search needs dev examples to score candidates")
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
