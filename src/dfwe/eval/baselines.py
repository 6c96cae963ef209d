"""Baselines that reuse the fine-tuned ingredients: soups, the logit ensemble, the best single model.

Pure functions over dev scores and a soup-scoring callable, so each rule is testable on its own, and the
stage function :func:`choose_on_dev` that applies them to a live weight space.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from dfwe.data.metrics import score
from dfwe.merge.fold import DevFold

BEST_SINGLE = "best-expert-ft"


def uniform_weights(count: int) -> np.ndarray:
    """The plain average of ``count`` ingredients."""
    return np.full(count, 1.0 / count)


def best_single(dev_scores: Sequence[float]) -> int:
    """Index of the ingredient with the highest dev score (the first one on ties)."""
    return int(np.argmax(dev_scores))


def greedy_soup(dev_scores: Sequence[float], soup_score: Callable[[np.ndarray], float]) -> np.ndarray:
    """Wortsman et al.'s greedy soup: visit ingredients by decreasing dev score, starting from the best,
    and keep one only if the uniform average with it *strictly* improves the dev score.

    ``soup_score(weights)`` scores a uniform soup given as weights over all ingredients (higher is better).
    """
    order = np.argsort(-np.asarray(dev_scores, dtype=float), kind="stable")
    kept = [int(order[0])]
    best = float(dev_scores[order[0]])
    for candidate in order[1:]:
        trial = np.zeros(len(dev_scores))
        trial[[*kept, int(candidate)]] = 1.0 / (len(kept) + 1)
        score = soup_score(trial)
        if score > best:
            kept.append(int(candidate))
            best = score
    weights = np.zeros(len(dev_scores))
    weights[kept] = 1.0 / len(kept)
    return weights


def logit_ensemble(logits: Sequence[np.ndarray]) -> np.ndarray:
    """The average of all models' logits (costs one forward pass per model at inference)."""
    return np.mean(np.stack(logits), axis=0)


@dataclass(frozen=True)
class DevChoices:
    """What the few-sample dev set chose among the ingredients: their dev scores, the best one, the greedy soup."""

    scores: list[float]
    best: int
    greedy: np.ndarray


def choose_on_dev(fold: DevFold, metric: str, singles: DevFold | None = None) -> DevChoices:
    """Score every ingredient (with its own head) and build Wortsman's greedy soup, all on ``fold``'s dev data.

    ``metric`` is the task's headline metric (higher is better); soups get the run's head rule. ``singles`` holds
    the single models when ``fold``'s ingredients are other models (recipe soups): the best single model is
    chosen among them, and the greedy soup visits ``fold``'s own ingredients by their dev scores.
    """
    count = fold.space.num_ingredients

    def dev_score(on: DevFold, weights: np.ndarray, refit: bool) -> float:
        on.merge("linear", weights, refit=refit)
        return score(on.logits(on.data), on.data)[metric]

    pooled = [dev_score(fold, np.eye(count)[i], refit=False) for i in range(count)]
    single = pooled if singles is None else [dev_score(singles, np.eye(count)[i], refit=False) for i in range(count)]
    return DevChoices(single, best_single(single), greedy_soup(pooled, lambda w: dev_score(fold, w, refit=True)))
