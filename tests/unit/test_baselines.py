"""Greedy soup follows Wortsman et al.'s rule on a constructed case."""

from __future__ import annotations

import numpy as np

from dfwe.eval.baselines import best_single, greedy_soup, logit_ensemble, uniform_weights


def test_greedy_soup_keeps_only_strict_improvements_in_dev_order():
    dev_scores = [0.50, 0.70, 0.60, 0.65]  # visiting order: 1, 3, 2, 0
    soup_values = {
        (1, 3): 0.72,     # improves on 0.70: keep 3
        (1, 2, 3): 0.72,  # ties 0.72: not a strict improvement, drop 2
        (0, 1, 3): 0.75,  # improves: keep 0
    }
    visited = []

    def soup_score(weights: np.ndarray) -> float:
        members = tuple(int(i) for i in np.flatnonzero(weights))
        assert np.allclose(weights[list(members)], 1 / len(members))
        visited.append(members)
        return soup_values[members]

    weights = greedy_soup(dev_scores, soup_score)
    assert visited == [(1, 3), (1, 2, 3), (0, 1, 3)]
    np.testing.assert_allclose(weights, [1 / 3, 1 / 3, 0, 1 / 3])


def test_greedy_soup_of_one_good_ingredient_stays_single():
    weights = greedy_soup([0.2, 0.9, 0.1], lambda w: 0.0)
    np.testing.assert_allclose(weights, [0, 1, 0])


def test_best_single_uniform_and_logit_ensemble():
    assert best_single([0.3, 0.8, 0.8]) == 1
    np.testing.assert_allclose(uniform_weights(4), [0.25] * 4)
    a, b = np.array([[1.0, 3.0]]), np.array([[3.0, -1.0]])
    np.testing.assert_allclose(logit_ensemble([a, b]), [[2.0, 1.0]])
