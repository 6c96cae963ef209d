"""The scores stage: every method's outputs on dev, the held-out split and validation; metrics, bootstrap
intervals, and paired differences against dfwe.

Outputs of fixed merges are cached under content keys (the ingredients' keys, the weights, the head rule and
the example set's digest), so runs that differ only in their search score each baseline once. Two methods
scored on the same examples are compared by a *paired* bootstrap (:mod:`dfwe.stats`): words such as
"beats" are only earned where the paired interval excludes 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping

import numpy as np
from pydantic import Field, field_validator

from dfwe.cache import cached_logits, content_key
from dfwe.data.metrics import score
from dfwe.data.sets import ExampleSet
from dfwe.eval.barriers import BarrierPairs
from dfwe.eval.baselines import BEST_SINGLE, logit_ensemble
from dfwe.merge.fold import DevFold
from dfwe.schema import Frozen
from dfwe.stats import MetricStats, interval, paired_difference

LOGIT_ENSEMBLE = "logit-ensemble"
HELD_OUT = ("test", "validation")  # the splits scored for reporting, never for a choice


class EvalConfig(Frozen):
    """Scoring: which official split is held out for the final scores, bootstrap resamples, barriers.

    ``split: dev`` scores on the official dev split instead of test: use it while developing a method, so
    that test data never steers a choice (the few-sample dev set is drawn from train, so both are disjoint).
    """

    split: Literal["test", "dev"] = "test"
    # Also score every method on the official dev split (reported as "validation"), so that method options
    # can be compared and chosen without looking at test scores.
    validation: bool = False
    bootstrap: int = Field(1000, ge=0)
    # Dev loss barriers (midpoint minus mean of the ends): between every pair of ingredients ("all", or true),
    # between base-ft and each other one ("base": with eight ingredients 15 merges to score instead of 36, for a
    # suite whose every merge refits a head on long rows), or none ("none", or false).
    barriers: BarrierPairs = "all"

    @field_validator("barriers", mode="before")
    @classmethod
    def _barriers_flag(cls, value: Any) -> Any:
        return ("all" if value else "none") if isinstance(value, bool) else value


@dataclass(frozen=True)
class Merge:
    """A merged method: weights ``[groups or 1, ingredients]`` under a merge method (linear, task arithmetic)."""

    weights: np.ndarray
    method: str = "linear"


@dataclass(frozen=True)
class Scores:
    """Metrics of every method on every split, test intervals, and per held-out split (test, validation) every
    method's per-example statistics and decoded predictions."""

    metrics: dict[str, dict[str, dict[str, float]]]  # method -> split -> metric -> value
    test_ci: dict[str, dict[str, list[float]]]
    stats: dict[str, dict[str, MetricStats]]  # held-out split -> method -> per-example statistics
    predictions: dict[str, dict[str, list[Any]]]  # held-out split -> method -> one decoded prediction per example
    ids: dict[str, list[str]]  # held-out split -> example ids, in the order of the statistics and predictions

    @property
    def test_stats(self) -> dict[str, MetricStats]:
        return self.stats["test"]

    @property
    def validation_stats(self) -> dict[str, MetricStats]:
        return self.stats.get("validation", {})

    @property
    def test_predictions(self) -> dict[str, list[Any]]:
        return self.predictions["test"]

    @property
    def test_ids(self) -> list[str]:
        return self.ids["test"]


def method_logits(fold: DevFold, ingredient_keys: list[str], names: list[str], merges: Mapping[str, Merge],
                  splits: Mapping[str, ExampleSet], cache_dir: Path, head: dict[str, Any], batch_size: int,
                  singles: tuple[DevFold, list[str]] | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Per split, the outputs of each single ingredient (its own head), the logit ensemble, and each merge (the
    run's head rule). A model is merged (and its head refit) once for every split it is scored on, and not at all
    when every split's outputs are cached. ``singles`` (a fold and its ingredients' keys) holds the single models
    when ``fold``'s ingredients, which the merges weigh, are other models (recipe soups)."""
    single_fold, single_keys = singles or (fold, ingredient_keys)

    def logits_of(merge: Merge, refit: bool, on: DevFold = fold, **identity: object) -> dict[str, np.ndarray]:
        merged = False  # whether the live model holds this merge yet

        def compute(data: ExampleSet) -> np.ndarray:
            nonlocal merged
            if not merged:
                on.merge(merge.method, merge.weights, refit=refit)
                merged = True
            return on.logits(data, batch_size)

        return {split: cached_logits(cache_dir, {"key": content_key("logits", data=data.encoded.digest(),
                                                                    **data.encoded.trunk_parts(), **identity)},
                                     lambda data=data: compute(data))
                for split, data in splits.items()}

    one_hot = np.eye(len(names))
    # a single ingredient's outputs depend on that ingredient alone; a merge's on all of them and the head rule
    out = {name: logits_of(Merge(one_hot[i]), False, single_fold, ingredient=single_keys[i])
           for i, name in enumerate(names)}
    out[LOGIT_ENSEMBLE] = {split: logit_ensemble([out[name][split] for name in names]) for split in splits}
    for name, merge in merges.items():
        out[name] = logits_of(merge, True, ingredients=ingredient_keys, method=merge.method,
                              weights=np.atleast_2d(merge.weights).tolist(), head=head)
    return {split: {method: by_split[split] for method, by_split in out.items()} for split in splits}


def score_methods(fold: DevFold, ingredient_keys: list[str], names: list[str], merges: Mapping[str, Merge],
                  splits: Mapping[str, ExampleSet], cache_dir: Path, head: dict[str, Any], batch_size: int,
                  resamples: int, seed: int, singles: tuple[DevFold, list[str]] | None = None) -> Scores:
    """Score every method on every split; test intervals; keep the held-out splits' per-example statistics and
    decoded predictions. ``singles``: as :func:`method_logits` says."""
    metrics: dict[str, dict[str, dict[str, float]]] = {}
    stats: dict[str, dict[str, MetricStats]] = {}
    predictions: dict[str, dict[str, list[Any]]] = {}
    outputs = method_logits(fold, ingredient_keys, names, merges, splits, cache_dir, head, batch_size, singles)
    for split, data in splits.items():
        for method, logits in outputs[split].items():
            decoded = data.shape.decode(logits, data.encoded, data.examples, data.task)
            per_example = data.shape.metric_stats(decoded, data.examples, data.task)
            metrics.setdefault(method, {})[split] = score(logits, data, per_example)
            if split in HELD_OUT:
                stats.setdefault(split, {})[method] = per_example
                predictions.setdefault(split, {})[method] = decoded
    test_ci = {method: interval(m, resamples, seed) if resamples else {} for method, m in stats["test"].items()}
    ids = {split: [e.id for e in splits[split].examples] for split in stats}
    return Scores(metrics, test_ci, stats, predictions, ids)


def rebuilt_scores(methods: Mapping[str, Mapping[str, Any]], predictions: Mapping[str, Mapping[str, Any]],
                   splits: Mapping[str, ExampleSet]) -> Scores:
    """The :class:`Scores` of a finished run, from its ``results.json`` methods and its ``predictions.json`` (one
    ``{"ids", "methods"}`` per held-out split): every per-example statistic is rebuilt from the decoded predictions
    and the examples of ``splits``, which must be the ones the run scored, in its order."""
    metrics = {method: {split: entry[split] for split in ("dev", *HELD_OUT) if split in entry}
               for method, entry in methods.items() if method != BEST_SINGLE}
    test_ci = {method: dict(entry["test_ci"]) for method, entry in methods.items() if method != BEST_SINGLE}
    stats: dict[str, dict[str, MetricStats]] = {}
    for split, saved in predictions.items():
        data = splits[split]
        if saved["ids"] != [e.id for e in data.examples]:
            raise ValueError(f"predictions of the {split} split are not for these {split} examples")
        stats[split] = {method: data.shape.metric_stats(values, data.examples, data.task)
                        for method, values in saved["methods"].items()}
    return Scores(metrics, test_ci, stats, {split: dict(saved["methods"]) for split, saved in predictions.items()},
                  {split: list(saved["ids"]) for split, saved in predictions.items()})


def with_best_single(stats: Mapping[str, MetricStats], best: str) -> dict[str, MetricStats]:
    """Per-example statistics with ``best-expert-ft`` added as the ingredient chosen on dev, so that it is
    compared pairwise like every other method (which ingredient it is may change from seed to seed)."""
    return {**stats, BEST_SINGLE: stats[best]} if stats else {}


def paired_against(stats: Mapping[str, MetricStats], method: str, resamples: int, seed: int) -> dict[str, dict]:
    """``method`` minus every other method on the same examples: difference, paired interval, verdict."""
    if not resamples:
        return {}
    return {other: paired_difference(stats[method], stats[other], resamples, seed)
            for other in stats if other != method}


__all__ = ["HELD_OUT", "LOGIT_ENSEMBLE", "EvalConfig", "Merge", "Scores", "method_logits", "paired_against",
           "rebuilt_scores", "score_methods", "with_best_single"]
