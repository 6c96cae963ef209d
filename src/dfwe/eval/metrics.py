"""Classification metrics from confusion matrices, vectorised so bootstrap intervals stay cheap.

Definitions follow scikit-learn: weighted F1 weights each class's F1 by its support in the gold labels;
macro F1 is the unweighted mean over classes present in gold or predictions (a class with no true and
no predicted examples is left out, as ``f1_score(labels=None)`` does); F1 with a zero denominator is 0.
"""

from __future__ import annotations

import numpy as np

METRICS = ("accuracy", "weighted_f1", "macro_f1")
LOWER_IS_BETTER = ("loss", "calibrated_loss")


def confusion(gold: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Confusion counts ``[gold, pred]``; with 2-D inputs ``[resamples, n]`` one matrix per row."""
    gold, pred = np.atleast_2d(gold), np.atleast_2d(pred)
    flat = gold * num_classes + pred + (np.arange(gold.shape[0]) * num_classes * num_classes)[:, None]
    counts = np.bincount(flat.ravel(), minlength=gold.shape[0] * num_classes * num_classes)
    return counts.reshape(gold.shape[0], num_classes, num_classes)


def metrics_from_confusion(matrix: np.ndarray) -> dict[str, np.ndarray]:
    """Accuracy, weighted F1 and macro F1 for each confusion matrix in a ``[m, C, C]`` stack."""
    tp = np.diagonal(matrix, axis1=1, axis2=2).astype(float)
    support = matrix.sum(axis=2).astype(float)
    predicted = matrix.sum(axis=1).astype(float)
    denominator = support + predicted
    f1 = np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)
    total = support.sum(axis=1)
    present = denominator > 0
    return {
        "accuracy": tp.sum(axis=1) / total,
        "weighted_f1": (f1 * support).sum(axis=1) / total,
        "macro_f1": f1.sum(axis=1) / np.maximum(present.sum(axis=1), 1),
    }


def classification_metrics(gold: np.ndarray, pred: np.ndarray, num_classes: int) -> dict[str, float]:
    """Accuracy, weighted F1 and macro F1 of one prediction vector."""
    scores = metrics_from_confusion(confusion(np.asarray(gold), np.asarray(pred), num_classes))
    return {name: float(values[0]) for name, values in scores.items()}


def cross_entropy(logits: np.ndarray, gold: np.ndarray) -> float:
    """Mean negative log-likelihood of the gold labels under softmax(logits)."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(shifted).sum(axis=1))
    return float(np.mean(log_norm - shifted[np.arange(len(gold)), gold]))


def calibrated_cross_entropy(logits: np.ndarray, gold: np.ndarray) -> float:
    """Cross-entropy after the best single temperature: ``min_T CE(logits / T)``.

    A proper score that is blind to over- or under-confidence: a model that ranks classes well scores low
    whatever its scale, while a collapsed model stays near ``log(classes)``. (Plain dev loss prefers a
    collapsed, near-uniform merge to a sharp but overconfident one.)
    """
    from scipy.optimize import minimize_scalar

    fit = minimize_scalar(lambda log_t: cross_entropy(logits / np.exp(log_t), gold), bounds=(-4.0, 4.0),
                          method="bounded", options={"xatol": 1e-4})
    return float(min(fit.fun, cross_entropy(logits, gold)))


def bootstrap_intervals(gold: np.ndarray, pred: np.ndarray, num_classes: int, resamples: int, seed: int,
                        level: float = 0.95) -> dict[str, list[float]]:
    """Percentile bootstrap intervals of every metric (resampling examples with replacement)."""
    if resamples == 0:
        return {}
    rng = np.random.default_rng([seed, 0xB007])
    rows = rng.integers(0, len(gold), size=(resamples, len(gold)))
    scores = metrics_from_confusion(confusion(np.asarray(gold)[rows], np.asarray(pred)[rows], num_classes))
    tail = (1 - level) / 2 * 100
    return {name: [float(np.percentile(v, tail)), float(np.percentile(v, 100 - tail))] for name, v in scores.items()}


def score_logits(logits: np.ndarray, gold: np.ndarray, num_classes: int) -> dict[str, float]:
    """All metrics plus the loss and the temperature-calibrated loss, from logits."""
    return {**classification_metrics(gold, logits.argmax(axis=1), num_classes), "loss": cross_entropy(logits, gold),
            "calibrated_loss": calibrated_cross_entropy(logits, gold)}
