"""Scores of a whole set's model outputs: the task shape's metrics, its loss, and the calibrated loss.

Metrics come from per-example sufficient statistics (:mod:`dfwe.stats`), so the same numbers feed
point estimates, bootstrap intervals and paired differences between methods.
"""

from __future__ import annotations

import numpy as np

from dfwe.data.sets import ExampleSet
from dfwe.stats import MetricStats, interval


def metric_stats(logits: np.ndarray, data: ExampleSet) -> MetricStats:
    """Per-example statistics of every metric of the task, from the decoded predictions."""
    shape = data.shape
    return shape.metric_stats(shape.decode(logits, data.encoded, data.examples, data.task), data.examples, data.task)


def temperature_fit(logits: np.ndarray, data: ExampleSet) -> tuple[float, float]:
    """The single temperature ``T`` in [e^-4, e^4] that minimises the task loss of ``logits / T``, and that loss."""
    from scipy.optimize import minimize_scalar

    shape, encoded = data.shape, data.encoded
    fit = minimize_scalar(lambda log_t: shape.nll(logits / np.exp(log_t), encoded), bounds=(-4.0, 4.0),
                          method="bounded", options={"xatol": 1e-4})
    return float(np.exp(fit.x)), float(fit.fun)


def calibrated_loss(logits: np.ndarray, data: ExampleSet) -> float:
    """The task loss after the best single temperature: ``min_T loss(logits / T)``.

    A proper score that is blind to over- or under-confidence: a model that ranks outcomes well scores low
    whatever its scale, while a collapsed model stays near the loss of a uniform guess. (The plain loss
    prefers a collapsed, near-uniform merge to a sharp but overconfident one.)
    """
    _, loss = temperature_fit(logits, data)
    return float(min(loss, data.shape.nll(logits, data.encoded)))


def score(logits: np.ndarray, data: ExampleSet, stats: MetricStats | None = None) -> dict[str, float]:
    """Every metric of the task (from ``stats`` when already computed) plus ``loss`` and ``calibrated_loss``."""
    return {**(stats or metric_stats(logits, data)).value(), "loss": data.shape.nll(logits, data.encoded),
            "calibrated_loss": calibrated_loss(logits, data)}


def intervals(logits: np.ndarray, data: ExampleSet, resamples: int, seed: int) -> dict[str, list[float]]:
    """95% percentile bootstrap intervals of every metric (resampling examples)."""
    return interval(metric_stats(logits, data), resamples, seed) if resamples else {}
