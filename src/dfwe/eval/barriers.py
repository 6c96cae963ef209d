"""Loss barriers: how much worse the straight-line midpoint of two ingredients is than its ends.

For ingredients ``i`` and ``j`` the barrier is ``loss(θi/2 + θj/2) - (loss(θi) + loss(θj)) / 2`` on the
few-sample dev set, every point scored under the run's head rule. A barrier near zero (or below) means the
two sit in one basin and their average works; a large one means averaging them destroys both.
"""

from __future__ import annotations

from itertools import combinations
from typing import Literal, Sequence

import numpy as np

from dfwe.data.metrics import score
from dfwe.merge.fold import DevFold
from dfwe.train.target import BASE_FT

BARRIER_METRICS = ("loss", "calibrated_loss")
BarrierPairs = Literal["all", "base", "none"]


def barrier_pairs(names: Sequence[str], pairs: BarrierPairs) -> list[tuple[int, int]]:
    """Which pairs of ingredients get a barrier: every pair, those of ``base-ft`` with each other ingredient
    (every pair when there is no ``base-ft``), or none."""
    if pairs == "none":
        return []
    if pairs == "base" and BASE_FT in names:
        anchor = names.index(BASE_FT)
        return [(min(anchor, j), max(anchor, j)) for j in range(len(names)) if j != anchor]
    return list(combinations(range(len(names)), 2))


def loss_barriers(fold: DevFold, names: Sequence[str], headline: str, pairs: BarrierPairs = "all") -> list[dict]:
    """One row per pair of ingredients (:func:`barrier_pairs`): the ends' and the midpoint's dev scores and the
    barriers."""
    count = len(names)
    chosen = barrier_pairs(names, pairs)
    if not chosen:
        return []

    def dev_scores(weights: np.ndarray) -> dict[str, float]:
        fold.merge("linear", weights)
        return score(fold.logits(fold.data), fold.data)

    ends = {i: dev_scores(np.eye(count)[i]) for i in sorted({i for pair in chosen for i in pair})}
    rows = []
    for i, j in chosen:
        mid = dev_scores((np.eye(count)[i] + np.eye(count)[j]) / 2)
        row: dict = {"a": names[i], "b": names[j]}
        for metric in (*BARRIER_METRICS, headline):
            row[metric] = {"a": ends[i][metric], "b": ends[j][metric], "mid": mid[metric],
                           "barrier": mid[metric] - (ends[i][metric] + ends[j][metric]) / 2}
        rows.append(row)
    return rows
