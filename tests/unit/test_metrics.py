"""Metrics agree with scikit-learn, including classes missing from gold or predictions."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, log_loss

from dfwe.eval.metrics import bootstrap_intervals, classification_metrics, cross_entropy


@pytest.mark.parametrize("seed", range(5))
def test_metrics_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    gold = rng.integers(0, 6, size=200)
    pred = np.where(rng.random(200) < 0.5, gold, rng.integers(0, 7, size=200))  # class 6 never gold
    ours = classification_metrics(gold, pred, 7)
    assert ours["accuracy"] == pytest.approx(accuracy_score(gold, pred), abs=1e-12)
    assert ours["weighted_f1"] == pytest.approx(f1_score(gold, pred, average="weighted"), abs=1e-12)
    assert ours["macro_f1"] == pytest.approx(f1_score(gold, pred, average="macro"), abs=1e-12)


def test_hand_computed_case():
    gold = np.array([0, 0, 1, 1, 2])
    pred = np.array([0, 1, 1, 1, 0])
    scores = classification_metrics(gold, pred, 3)
    # F1: class0 = 2*1/(2+2) = 0.5, class1 = 2*2/(2+3) = 0.8, class2 = 0; supports 2, 2, 1
    assert scores["accuracy"] == pytest.approx(0.6)
    assert scores["weighted_f1"] == pytest.approx((0.5 * 2 + 0.8 * 2) / 5)
    assert scores["macro_f1"] == pytest.approx(1.3 / 3)


def test_cross_entropy_matches_sklearn_log_loss():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 4))
    gold = rng.integers(0, 4, size=50)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert cross_entropy(logits, gold) == pytest.approx(log_loss(gold, probs, labels=range(4)), abs=1e-9)


def test_bootstrap_interval_brackets_the_point_estimate_and_is_seeded():
    rng = np.random.default_rng(1)
    gold = rng.integers(0, 3, size=300)
    pred = np.where(rng.random(300) < 0.6, gold, rng.integers(0, 3, size=300))
    point = classification_metrics(gold, pred, 3)["weighted_f1"]
    low, high = bootstrap_intervals(gold, pred, 3, 500, seed=0)["weighted_f1"]
    assert low < point < high
    assert bootstrap_intervals(gold, pred, 3, 500, seed=0) == bootstrap_intervals(gold, pred, 3, 500, seed=0)


def test_calibrated_cross_entropy_is_blind_to_confidence_scale():
    from dfwe.eval.metrics import calibrated_cross_entropy

    rng = np.random.default_rng(3)
    gold = rng.integers(0, 5, size=400)
    logits = rng.normal(size=(400, 5))
    logits[np.arange(400), gold] += 1.0  # informative, moderately confident
    base = calibrated_cross_entropy(logits, gold)
    assert calibrated_cross_entropy(8.0 * logits, gold) == pytest.approx(base, abs=1e-4)
    assert calibrated_cross_entropy(0.2 * logits, gold) == pytest.approx(base, abs=1e-4)
    assert base <= cross_entropy(logits, gold) + 1e-12
    # an overconfident but informative model beats a collapsed one, unlike with the plain loss
    assert cross_entropy(8.0 * logits, gold) > np.log(5)
    assert calibrated_cross_entropy(8.0 * logits, gold) < calibrated_cross_entropy(np.zeros((400, 5)), gold)
    assert calibrated_cross_entropy(np.zeros((400, 5)), gold) == pytest.approx(np.log(5))


def test_cached_logits_computes_once_per_key(tmp_path):
    from dfwe.eval.predict import cached_logits

    calls = []

    def compute(value):
        def run():
            calls.append(value)
            return np.full((3, 2), value, dtype=np.float32)
        return run

    key = {"weights": [0.5, 0.5], "ids": ["a", "b", "c"]}
    first = cached_logits(tmp_path, key, compute(1.0))
    again = cached_logits(tmp_path, dict(reversed(list(key.items()))), compute(2.0))  # same key, other order
    other = cached_logits(tmp_path, {**key, "weights": [1.0, 0.0]}, compute(3.0))
    assert calls == [1.0, 3.0]
    np.testing.assert_array_equal(again, first)
    assert again.dtype == np.float32 and float(other[0, 0]) == 3.0
    assert len(list(tmp_path.glob("*.npy"))) == 2 and not list(tmp_path.glob(".*tmp*"))
