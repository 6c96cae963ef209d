"""Bootstrap intervals, and paired intervals of differences, for metrics that are functions of summed stats.

A metric is given by per-example sufficient statistics ``stats[n, d]`` and a ``finalize`` that maps summed
statistics ``totals[..., d]`` to ``{name: values[...]}``. Resampling examples then only reweights rows, so the
totals of every resample are a single product ``weights @ stats`` and no metric code runs per resample.
Pairing two methods means scoring both on the *same* resample weights: the shared example difficulty cancels
and the interval of the difference is much tighter than two independent intervals would suggest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Collection, Sequence

import numpy as np

Finalize = Callable[[np.ndarray], dict[str, np.ndarray]]
# The losses every task reports beside its shape's metrics; every other metric is higher-is-better.
LOWER_IS_BETTER = ("loss", "calibrated_loss")


@dataclass(frozen=True)
class MetricStats:
    """Per-example sufficient statistics ``[n, d]`` and the map from their sums to metric values."""

    stats: np.ndarray
    finalize: Finalize

    def value(self) -> dict[str, float]:
        """Metric values on the full (unresampled) example set."""
        return {name: float(v) for name, v in self.finalize(self.stats.sum(axis=0)).items()}


def classification_stats(gold: Sequence[int] | np.ndarray, pred: Sequence[int] | np.ndarray, num_classes: int,
                         labels_ignored: Sequence[int] = ()) -> MetricStats:
    """Confusion-cell one-hots (``d = C*C``) finalised to accuracy and weighted/macro/micro F1 as sklearn.

    ``labels_ignored`` classes (e.g. relation extraction's "no relation") still count for accuracy but are
    left out of every F1 average, as sklearn's ``labels=`` argument leaves them out.
    """
    gold, pred = np.asarray(gold, dtype=np.int64), np.asarray(pred, dtype=np.int64)
    if gold.shape != pred.shape or gold.ndim != 1:
        raise ValueError(f"gold and pred must be equal-length vectors, got {gold.shape} and {pred.shape}")
    stats = np.zeros((len(gold), num_classes * num_classes))
    stats[np.arange(len(gold)), gold * num_classes + pred] = 1.0
    kept = np.ones(num_classes, dtype=bool)
    kept[list(labels_ignored)] = False

    def finalize(totals: np.ndarray) -> dict[str, np.ndarray]:
        matrix = totals.reshape(*totals.shape[:-1], num_classes, num_classes)
        tp = np.diagonal(matrix, axis1=-2, axis2=-1)
        support, predicted = matrix.sum(axis=-1), matrix.sum(axis=-2)
        denominator = support + predicted
        f1 = _safe_divide(2 * tp, denominator)
        # sklearn's labels=None macro average skips classes with neither gold nor predicted examples.
        present = (denominator > 0) & kept
        kept_support = np.where(kept, support, 0.0)
        micro_tp = np.where(kept, tp, 0.0).sum(axis=-1)
        micro_den = np.where(kept, denominator, 0.0).sum(axis=-1)
        return {
            "accuracy": _safe_divide(tp.sum(axis=-1), support.sum(axis=-1)),
            "weighted_f1": _safe_divide((f1 * kept_support).sum(axis=-1), kept_support.sum(axis=-1)),
            "macro_f1": _safe_divide(np.where(present, f1, 0.0).sum(axis=-1), present.sum(axis=-1)),
            "micro_f1": _safe_divide(2 * micro_tp, micro_den),
        }

    return MetricStats(stats, finalize)


def mean_stats(scores: Sequence[float] | np.ndarray, name: str) -> MetricStats:
    """Per-example scores (token F1, exact match) averaged: stat ``[score, 1]``, metric = sum / count."""
    scores = np.asarray(scores, dtype=np.float64)
    return MetricStats(np.stack([scores, np.ones_like(scores)], axis=1),
                       lambda totals: {name: _safe_divide(totals[..., 0], totals[..., 1])})


def bootstrap_weights(n: int, resamples: int, seed: int) -> np.ndarray:
    """``[resamples, n]`` counts of how often each example is drawn, one row per resample.

    Counts of ``rng.integers(0, n, (resamples, n))`` rows, so a resample equals indexing with those rows.
    """
    if n < 1 or resamples < 1:
        raise ValueError(f"need at least one example and one resample, got n={n}, resamples={resamples}")
    rng = np.random.default_rng([seed, 0xB007])
    rows = rng.integers(0, n, size=(resamples, n))
    # Offsetting each row into its own block of n bins counts every row in one bincount call.
    flat = (rows + (np.arange(resamples) * n)[:, None]).ravel()
    return np.bincount(flat, minlength=resamples * n).reshape(resamples, n)


def interval(m: MetricStats, resamples: int, seed: int, level: float = 0.95) -> dict[str, list[float]]:
    """Percentile bootstrap interval of every metric."""
    weights = bootstrap_weights(len(m.stats), resamples, seed)
    return {name: _percentiles(v, level) for name, v in m.finalize(weights @ m.stats).items()}


def verdict(ci: Sequence[float], higher_is_better: bool = True) -> str:
    """"beats" when the interval of a - b excludes 0 on the good side, "loses" on the bad side, else "tie"."""
    lo, hi = ci
    if higher_is_better:
        return "beats" if lo > 0 else "loses" if hi < 0 else "tie"
    return "beats" if hi < 0 else "loses" if lo > 0 else "tie"


def paired_difference(a: MetricStats, b: MetricStats, resamples: int, seed: int, level: float = 0.95,
                      lower_is_better: Collection[str] = LOWER_IS_BETTER) -> dict[str, dict]:
    """Difference ``a - b`` per metric with a paired percentile interval and a verdict for ``a``."""
    return _pooled([(a, b)], resamples, seed, level, lower_is_better, per_seed=False)


def pooled_difference(pairs: Sequence[tuple[MetricStats, MetricStats]], resamples: int, seed: int,
                      level: float = 0.95, lower_is_better: Collection[str] = LOWER_IS_BETTER) -> dict[str, dict]:
    """Per-seed differences ``a_s - b_s``, their mean and sample std, and a pooled interval of the mean.

    Every seed is scored on the same test examples, so one set of resample weights is applied to all seeds:
    the interval then reflects test-set sampling of the seed-averaged difference, not seed noise twice.
    """
    return _pooled(pairs, resamples, seed, level, lower_is_better, per_seed=True)


def resampled_difference(pairs: Sequence[tuple[MetricStats, MetricStats]], resamples: int, seed: int
                         ) -> tuple[dict[str, list[float]], dict[str, np.ndarray]]:
    """Per metric: each pair's difference ``a - b``, and ``[resamples]`` bootstrap draws of their mean, every pair
    resampled with the same weights (the pairs share their examples: seeds of one target).

    The draws of independent example sets (several targets) can be averaged draw by draw, which gives the
    interval of a difference averaged over targets."""
    if not pairs:
        raise ValueError("need at least one (a, b) pair")
    n = len(pairs[0][0].stats)
    if any(len(a.stats) != n or len(b.stats) != n for a, b in pairs):
        raise ValueError("every method must be scored on the same examples (equal n)")
    weights = bootstrap_weights(n, resamples, seed)
    diffs: dict[str, list[float]] = {}
    resampled: dict[str, np.ndarray] = {}
    for a, b in pairs:
        value_a, value_b = a.value(), b.value()
        boot_a, boot_b = a.finalize(weights @ a.stats), b.finalize(weights @ b.stats)
        for name in value_a:
            diffs.setdefault(name, []).append(value_a[name] - value_b[name])
            resampled[name] = resampled.get(name, 0.0) + (boot_a[name] - boot_b[name])
    return diffs, {name: draws / len(pairs) for name, draws in resampled.items()}


def difference_summary(per: Sequence[float], draws: np.ndarray, level: float = 0.95, higher_is_better: bool = True
                       ) -> dict:
    """Per-seed differences, their mean and sample std, the percentile interval of ``draws`` and its verdict."""
    ci = _percentiles(draws, level)
    return {"per_seed": [float(d) for d in per], "mean": float(np.mean(per)),
            "std": float(np.std(per, ddof=1)) if len(per) > 1 else 0.0, "ci": ci,
            "verdict": verdict(ci, higher_is_better)}


def _pooled(pairs: Sequence[tuple[MetricStats, MetricStats]], resamples: int, seed: int, level: float,
            lower_is_better: Collection[str], per_seed: bool) -> dict[str, dict]:
    diffs, resampled = resampled_difference(pairs, resamples, seed)
    result: dict[str, dict] = {}
    for name, per in diffs.items():
        if per_seed:
            result[name] = difference_summary(per, resampled[name], level, name not in lower_is_better)
            continue
        ci = _percentiles(resampled[name], level)
        result[name] = {"diff": per[0], "ci": ci, "verdict": verdict(ci, higher_is_better=name not in lower_is_better)}
    return result


def _percentiles(values: np.ndarray, level: float) -> list[float]:
    tail = (1 - level) / 2 * 100
    return [float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))]


def _safe_divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    # sklearn's zero_division default: a metric with an empty denominator scores 0, not NaN.
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den > 0)
