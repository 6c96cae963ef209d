"""Bootstrap and paired-bootstrap intervals agree with brute-force index resampling scored by scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from dfwe.stats import (
    bootstrap_weights,
    classification_stats,
    interval,
    mean_stats,
    paired_difference,
    pooled_difference,
    verdict,
)

NAMES = ("accuracy", "weighted_f1", "macro_f1", "micro_f1")


def sklearn_scores(gold, pred, labels=None):
    return {
        "accuracy": accuracy_score(gold, pred),
        "weighted_f1": f1_score(gold, pred, average="weighted", labels=labels, zero_division=0),
        "macro_f1": f1_score(gold, pred, average="macro", labels=labels, zero_division=0),
        "micro_f1": f1_score(gold, pred, average="micro", labels=labels, zero_division=0),
    }


def index_draws(n, resamples, seed):
    return np.random.default_rng([seed, 0xB007]).integers(0, n, size=(resamples, n))


def percentiles(values, level=0.95):
    tail = (1 - level) / 2 * 100
    return [np.percentile(values, tail), np.percentile(values, 100 - tail)]


CASES = [
    # class 2 is in gold but never predicted
    ([0, 0, 1, 1, 2, 2, 0], [0, 1, 1, 1, 0, 1, 0]),
    # class 3 is predicted but absent from gold; class 2 is in neither (left out of macro)
    ([0, 1, 1, 0, 1, 0], [3, 1, 0, 0, 1, 3]),
    # one class only in gold, one only in predictions, all wrong
    ([1, 1, 1], [0, 0, 0]),
]


@pytest.mark.parametrize("gold,pred", CASES)
def test_classification_stats_match_sklearn(gold, pred):
    ours = classification_stats(gold, pred, num_classes=4).value()
    expected = sklearn_scores(gold, pred)
    assert set(ours) == set(NAMES)
    for name in NAMES:
        assert ours[name] == pytest.approx(expected[name], abs=1e-12), name


def test_hand_computed_values():
    # F1: class0 = 2*1/(2+2) = 0.5, class1 = 2*2/(2+3) = 0.8, class2 = 0; supports 2, 2, 1
    ours = classification_stats([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], 3).value()
    assert ours["accuracy"] == pytest.approx(0.6)
    assert ours["micro_f1"] == pytest.approx(0.6)
    assert ours["weighted_f1"] == pytest.approx((0.5 * 2 + 0.8 * 2) / 5)
    assert ours["macro_f1"] == pytest.approx(1.3 / 3)


@pytest.mark.parametrize("seed", range(3))
def test_labels_ignored_match_sklearn_labels(seed):
    rng = np.random.default_rng(seed)
    gold = rng.integers(0, 5, size=60)
    pred = np.where(rng.random(60) < 0.5, gold, rng.integers(0, 5, size=60))
    ours = classification_stats(gold, pred, 5, labels_ignored=[0]).value()
    kept = [1, 2, 3, 4]
    expected = sklearn_scores(gold, pred, labels=kept)
    assert ours["accuracy"] == pytest.approx(accuracy_score(gold, pred), abs=1e-12)
    for name in ("weighted_f1", "macro_f1", "micro_f1"):
        assert ours[name] == pytest.approx(expected[name], abs=1e-12), name
    # Micro F1 over kept classes differs from accuracy once the ignored class is excluded.
    assert ours["micro_f1"] != pytest.approx(ours["accuracy"])


def test_mean_stats_is_plain_mean():
    scores = [0.25, 1.0, 0.0, 0.5]
    assert mean_stats(scores, "token_f1").value() == {"token_f1": pytest.approx(0.4375)}


def test_bootstrap_weights_count_the_index_draws():
    weights = bootstrap_weights(9, 50, seed=3)
    rows = index_draws(9, 50, seed=3)
    assert weights.shape == (50, 9)
    assert (weights.sum(axis=1) == 9).all()
    np.testing.assert_array_equal(weights, np.stack([np.bincount(r, minlength=9) for r in rows]))
    np.testing.assert_array_equal(weights, bootstrap_weights(9, 50, seed=3))
    assert not np.array_equal(weights, bootstrap_weights(9, 50, seed=4))


def small_case(seed=0, n=12):
    rng = np.random.default_rng(seed)
    gold = rng.integers(0, 3, size=n)
    pred_a = np.where(rng.random(n) < 0.7, gold, rng.integers(0, 3, size=n))
    pred_b = np.where(rng.random(n) < 0.4, gold, rng.integers(0, 3, size=n))
    return gold, pred_a, pred_b


def test_interval_matches_brute_force():
    gold, pred, _ = small_case()
    ours = interval(classification_stats(gold, pred, 3), resamples=100, seed=7, level=0.9)
    resampled = [sklearn_scores(gold[idx], pred[idx]) for idx in index_draws(12, 100, seed=7)]
    for name in NAMES:
        np.testing.assert_allclose(ours[name], percentiles([r[name] for r in resampled], 0.9), rtol=0, atol=1e-12)
    assert ours["accuracy"][0] < ours["accuracy"][1]


def test_paired_difference_matches_brute_force():
    gold, pred_a, pred_b = small_case()
    ours = paired_difference(classification_stats(gold, pred_a, 3), classification_stats(gold, pred_b, 3),
                             resamples=200, seed=11)
    full_a, full_b = sklearn_scores(gold, pred_a), sklearn_scores(gold, pred_b)
    diffs = {name: [] for name in NAMES}
    for idx in index_draws(12, 200, seed=11):
        sa, sb = sklearn_scores(gold[idx], pred_a[idx]), sklearn_scores(gold[idx], pred_b[idx])
        for name in NAMES:
            diffs[name].append(sa[name] - sb[name])
    for name in NAMES:
        assert ours[name]["diff"] == pytest.approx(full_a[name] - full_b[name], abs=1e-12)
        np.testing.assert_allclose(ours[name]["ci"], percentiles(diffs[name]), rtol=0, atol=1e-12)
        assert ours[name]["verdict"] == verdict(ours[name]["ci"])


def test_identical_predictions_tie_exactly():
    gold, pred, _ = small_case()
    m = classification_stats(gold, pred, 3)
    for name, entry in paired_difference(m, m, resamples=100, seed=0).items():
        assert entry == {"diff": 0.0, "ci": [0.0, 0.0], "verdict": "tie"}, name


def test_all_right_beats_all_wrong_and_reverse_loses():
    gold = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    right, wrong = classification_stats(gold, gold, 3), classification_stats(gold, (gold + 1) % 3, 3)
    for entry in paired_difference(right, wrong, resamples=100, seed=0).values():
        assert entry["diff"] == 1.0 and entry["verdict"] == "beats"
    for entry in paired_difference(wrong, right, resamples=100, seed=0).values():
        assert entry["diff"] == -1.0 and entry["verdict"] == "loses"


def test_verdict_lower_is_better():
    assert verdict([0.1, 0.3]) == "beats" and verdict([-0.3, -0.1]) == "loses" and verdict([-0.1, 0.1]) == "tie"
    assert verdict([-0.3, -0.1], higher_is_better=False) == "beats"
    assert verdict([0.1, 0.3], higher_is_better=False) == "loses"
    lower = mean_stats([1.0, 1.2, 0.9, 1.1], "loss")
    higher = mean_stats([2.0, 2.5, 1.9, 2.2], "loss")
    assert paired_difference(lower, higher, resamples=50, seed=0)["loss"]["verdict"] == "beats"
    assert paired_difference(lower, higher, resamples=50, seed=0, lower_is_better=())["loss"]["verdict"] == "loses"


def test_unequal_n_is_rejected():
    a = classification_stats([0, 1, 2], [0, 1, 2], 3)
    b = classification_stats([0, 1], [0, 1], 3)
    with pytest.raises(ValueError):
        paired_difference(a, b, resamples=10, seed=0)
    with pytest.raises(ValueError):
        pooled_difference([(a, a), (b, b)], resamples=10, seed=0)


def test_pooled_difference_matches_brute_force():
    seeds = [small_case(seed=s) for s in range(3)]
    gold = seeds[0][0]  # same test examples for every seed; only the predictions differ
    preds = [(gold, a, b) for _, a, b in seeds]
    pairs = [(classification_stats(g, a, 3), classification_stats(g, b, 3)) for g, a, b in preds]
    ours = pooled_difference(pairs, resamples=60, seed=5)
    pooled = {name: [] for name in NAMES}
    for idx in index_draws(12, 60, seed=5):  # the same idx for every seed
        per = [{k: sa[k] - sb[k] for k in NAMES}
               for sa, sb in ((sklearn_scores(g[idx], a[idx]), sklearn_scores(g[idx], b[idx])) for g, a, b in preds)]
        for name in NAMES:
            pooled[name].append(np.mean([p[name] for p in per]))
    for name in NAMES:
        per_seed = [sklearn_scores(g, a)[name] - sklearn_scores(g, b)[name] for g, a, b in preds]
        entry = ours[name]
        np.testing.assert_allclose(entry["per_seed"], per_seed, rtol=0, atol=1e-12)
        assert entry["mean"] == pytest.approx(np.mean(per_seed), abs=1e-12)
        assert entry["std"] == pytest.approx(np.std(per_seed, ddof=1), abs=1e-12)
        np.testing.assert_allclose(entry["ci"], percentiles(pooled[name]), rtol=0, atol=1e-12)
        assert entry["verdict"] == verdict(entry["ci"])


def test_pooled_single_seed_equals_paired():
    gold, pred_a, pred_b = small_case(seed=1)
    a, b = classification_stats(gold, pred_a, 3), classification_stats(gold, pred_b, 3)
    pooled, paired = pooled_difference([(a, b)], 100, seed=2), paired_difference(a, b, 100, seed=2)
    for name in NAMES:
        assert pooled[name]["std"] == 0.0 and pooled[name]["mean"] == paired[name]["diff"]
        assert pooled[name]["ci"] == paired[name]["ci"]
