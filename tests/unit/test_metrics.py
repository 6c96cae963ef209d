"""Scores of a set's logits agree with scikit-learn (metrics and loss), including classes missing from gold or
predictions; the calibrated loss is the loss at the best temperature; bootstrap intervals are seeded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score, log_loss

from dfwe.data.encode import EncodedSet
from dfwe.data.metrics import calibrated_loss, intervals, metric_stats, score
from dfwe.data.records import Example, Task
from dfwe.data.sets import ExampleSet
from dfwe.data.shapes import get_shape

SHAPE = get_shape("classification")
METRICS = ("accuracy", "weighted_f1", "macro_f1", "micro_f1")


def example_set(gold, num_labels: int) -> ExampleSet:
    """A hand-made classification set: what scoring reads is the examples' labels and the encoded targets."""
    labels = tuple(f"c{i}" for i in range(num_labels))
    task = Task(name="t", path=Path("t"), shape="classification", labels=labels, metric="weighted_f1", splits={})
    gold = [int(g) for g in gold]
    examples = tuple(Example(id=str(i), text="x", label=labels[g]) for i, g in enumerate(gold))
    n = len(gold)
    encoded = EncodedSet(ids=tuple(e.id for e in examples), input_ids=torch.zeros((n, 1), dtype=torch.long),
                         token_type_ids=torch.zeros((n, 1), dtype=torch.long), lengths=torch.ones(n, dtype=torch.long),
                         labels=torch.tensor(gold, dtype=torch.long), pad_id=0)
    return ExampleSet(task, examples, encoded)


def logits_predicting(pred, num_labels: int, rng: np.random.Generator) -> np.ndarray:
    """Random logits whose argmax is ``pred``."""
    logits = rng.normal(size=(len(pred), num_labels))
    logits[np.arange(len(pred)), pred] = logits.max(axis=1) + rng.uniform(0.1, 2.0, size=len(pred))
    return logits


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


@pytest.mark.parametrize("seed", range(5))
def test_scores_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    gold = rng.integers(0, 6, size=200)
    pred = np.where(rng.random(200) < 0.5, gold, rng.integers(0, 7, size=200))  # class 6 never gold
    logits = logits_predicting(pred, 7, rng)
    data = example_set(gold, 7)
    ours = score(logits, data)
    assert set(ours) == {*METRICS, "loss", "calibrated_loss"}
    assert ours["accuracy"] == pytest.approx(accuracy_score(gold, pred), abs=1e-12)
    assert ours["weighted_f1"] == pytest.approx(f1_score(gold, pred, average="weighted"), abs=1e-12)
    assert ours["macro_f1"] == pytest.approx(f1_score(gold, pred, average="macro"), abs=1e-12)
    assert ours["micro_f1"] == pytest.approx(f1_score(gold, pred, average="micro"), abs=1e-12)
    probs = np.exp(log_softmax(logits))
    assert ours["loss"] == pytest.approx(log_loss(gold, probs, labels=range(7)), abs=1e-9)
    assert ours["calibrated_loss"] <= ours["loss"] + 1e-12
    assert metric_stats(logits, data).value() == {name: ours[name] for name in METRICS}


def test_hand_computed_case():
    gold = np.array([0, 0, 1, 1, 2])
    pred = np.array([0, 1, 1, 1, 0])
    scores = score(logits_predicting(pred, 3, np.random.default_rng(0)), example_set(gold, 3))
    # F1: class0 = 2*1/(2+2) = 0.5, class1 = 2*2/(2+3) = 0.8, class2 = 0; supports 2, 2, 1
    assert scores["accuracy"] == pytest.approx(0.6)
    assert scores["weighted_f1"] == pytest.approx((0.5 * 2 + 0.8 * 2) / 5)
    assert scores["macro_f1"] == pytest.approx(1.3 / 3)
    assert scores["micro_f1"] == pytest.approx(0.6)


def test_loss_matches_sklearn_log_loss():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 4))
    gold = rng.integers(0, 4, size=50)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    data = example_set(gold, 4)
    assert SHAPE.nll(logits, data.encoded) == pytest.approx(log_loss(gold, probs, labels=range(4)), abs=1e-9)
    assert score(logits, data)["loss"] == SHAPE.nll(logits, data.encoded)


def test_bootstrap_interval_brackets_the_point_estimate_and_is_seeded():
    rng = np.random.default_rng(1)
    gold = rng.integers(0, 3, size=300)
    pred = np.where(rng.random(300) < 0.6, gold, rng.integers(0, 3, size=300))
    logits, data = logits_predicting(pred, 3, rng), example_set(gold, 3)
    point = score(logits, data)["weighted_f1"]
    assert point == pytest.approx(f1_score(gold, pred, average="weighted"), abs=1e-12)
    ranges = intervals(logits, data, 500, seed=0)
    assert set(ranges) == set(METRICS)
    low, high = ranges["weighted_f1"]
    assert low < point < high
    assert intervals(logits, data, 500, seed=0) == ranges
    assert intervals(logits, data, 500, seed=1) != ranges
    assert intervals(logits, data, 0, seed=0) == {}


def test_calibrated_loss_is_the_loss_at_the_best_temperature_and_blind_to_confidence_scale():
    rng = np.random.default_rng(3)
    gold = rng.integers(0, 5, size=400)
    logits = rng.normal(size=(400, 5))
    logits[np.arange(400), gold] += 1.0  # informative, moderately confident
    data = example_set(gold, 5)
    base = calibrated_loss(logits, data)

    # the reference without dfwe's scoring: the mean negative log-likelihood over a fine grid of temperatures
    def nll(values: np.ndarray) -> float:
        return float(-log_softmax(values)[np.arange(len(gold)), gold].mean())

    assert SHAPE.nll(logits, data.encoded) == pytest.approx(nll(logits), abs=1e-9)
    brute = min(nll(logits / t) for t in np.exp(np.linspace(-4, 4, 4001)))
    assert base == pytest.approx(brute, abs=1e-5)
    assert base <= nll(logits) + 1e-12

    assert calibrated_loss(8.0 * logits, data) == pytest.approx(base, abs=1e-4)
    assert calibrated_loss(0.2 * logits, data) == pytest.approx(base, abs=1e-4)
    assert base <= SHAPE.nll(logits, data.encoded) + 1e-12
    # an overconfident but informative model beats a collapsed one, unlike with the plain loss
    assert SHAPE.nll(8.0 * logits, data.encoded) > np.log(5)
    assert calibrated_loss(8.0 * logits, data) < calibrated_loss(np.zeros((400, 5)), data)
    assert calibrated_loss(np.zeros((400, 5)), data) == pytest.approx(np.log(5))
    assert score(8.0 * logits, data)["calibrated_loss"] == calibrated_loss(8.0 * logits, data)


def test_cached_logits_computes_once_per_key(tmp_path):
    from dfwe.cache import cached_logits

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
