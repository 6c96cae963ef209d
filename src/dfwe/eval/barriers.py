"""Loss barriers: how much worse the straight-line midpoint of two ingredients is than its ends.

For ingredients ``i`` and ``j`` the barrier is ``loss(θi/2 + θj/2) - (loss(θi) + loss(θj)) / 2`` on the
few-sample dev set, every point scored under the run's head rule. A barrier near zero (or below) means the
two sit in one basin and their average works; a large one means averaging them destroys both.
"""

from __future__ import annotations

from itertools import combinations
from typing import Sequence

import numpy as np

from dfwe.data.metrics import score
from dfwe.merge.fold import DevFold

BARRIER_METRICS = ("loss", "calibrated_loss")


def loss_barriers(fold: DevFold, names: Sequence[str], headline: str) -> list[dict]:
    """One row per pair of ingredients: the ends' and the midpoint's dev scores and the barriers."""
    count = len(names)

    def dev_scores(weights: np.ndarray) -> dict[str, float]:
        fold.merge("linear", weights)
        return score(fold.logits(fold.data), fold.data)

    ends = [dev_scores(np.eye(count)[i]) for i in range(count)]
    rows = []
    for i, j in combinations(range(count), 2):
        mid = dev_scores((np.eye(count)[i] + np.eye(count)[j]) / 2)
        row: dict = {"a": names[i], "b": names[j]}
        for metric in (*BARRIER_METRICS, headline):
            row[metric] = {"a": ends[i][metric], "b": ends[j][metric], "mid": mid[metric],
                           "barrier": mid[metric] - (ends[i][metric] + ends[j][metric]) / 2}
        rows.append(row)
    return rows
