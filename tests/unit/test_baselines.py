"""Greedy soup follows Wortsman et al.'s rule on a constructed case; choosing on dev scores singles as trained."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score

from dfwe.data.encode import EncodedSet
from dfwe.data.records import Example, Task
from dfwe.data.sets import ExampleSet
from dfwe.eval.baselines import best_single, choose_on_dev, greedy_soup, logit_ensemble, uniform_weights


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


def _linear_fold(data, ingredient_logits):
    """A stand-in for a live model whose output is the weighted sum of the ingredients' logits."""

    class Space:
        num_ingredients = len(ingredient_logits)

    class Fold:
        def __init__(self):
            self.space, self.data, self.calls, self.weights = Space(), data, [], None

        def merge(self, method, weights, refit=True):
            self.calls.append((method, tuple(weights), refit))
            self.weights = np.asarray(weights)

        def logits(self, data, batch_size=64):
            return sum(w * logits for w, logits in zip(self.weights, ingredient_logits))

    return Fold()


def _dev_set(gold):
    labels = ("a", "b", "c")
    task = Task(name="t", path=Path("t"), shape="classification", labels=labels, metric="accuracy", splits={})
    examples = tuple(Example(id=str(i), text="x", label=labels[g]) for i, g in enumerate(gold))
    tokens = torch.zeros((len(gold), 1), dtype=torch.long)  # scoring reads only the targets
    encoded = EncodedSet(ids=tuple(e.id for e in examples), input_ids=tokens, token_type_ids=tokens,
                         lengths=torch.ones(len(gold), dtype=torch.long), labels=torch.tensor(gold), pad_id=0)
    return ExampleSet(task, examples, encoded)


def test_choose_on_dev_picks_the_best_single_among_singles_and_the_greedy_soup_over_the_pool():
    """With recipe soups the merges' pool holds other models than the single baselines: the best single model
    is chosen among the singles' dev scores, the greedy soup visits the pool's own models by theirs."""
    rng = np.random.default_rng(1)
    gold = rng.integers(0, 3, size=40)
    data = _dev_set(gold)
    pool_logits = [rng.normal(size=(40, 3)) + skill * np.eye(3)[gold] for skill in (0.2, 1.5, 0.8, 1.0)]
    single_logits = [rng.normal(size=(40, 3)) + skill * np.eye(3)[gold] for skill in (2.0, 0.1, 0.3, 0.2)]
    pool, singles = _linear_fold(data, pool_logits), _linear_fold(data, single_logits)
    choices = choose_on_dev(pool, "accuracy", singles)

    def accuracy(logits, weights):
        return accuracy_score(gold, sum(w * out for w, out in zip(weights, logits)).argmax(axis=1))

    single_scores = [accuracy(single_logits, np.eye(4)[i]) for i in range(4)]
    pool_scores = [accuracy(pool_logits, np.eye(4)[i]) for i in range(4)]
    assert choices.scores == pytest.approx(single_scores, abs=1e-12) and choices.best == 0
    np.testing.assert_allclose(choices.greedy, greedy_soup(pool_scores, lambda w: accuracy(pool_logits, w)))
    assert choices.greedy[1] > 0  # the pool's best model starts the soup, not the singles' best
    assert all(not refit for _, _, refit in singles.calls)  # singles are only ever scored as trained


def test_choose_on_dev_scores_singles_with_their_heads_and_soups_with_the_head_rule():
    rng = np.random.default_rng(0)
    gold = rng.integers(0, 3, size=40)
    data = _dev_set(gold)
    # four ingredients of different skill: logits = noise + skill * one-hot(gold)
    ingredient_logits = [rng.normal(size=(40, 3)) + skill * np.eye(3)[gold] for skill in (0.2, 1.5, 0.8, 1.0)]
    fold = _linear_fold(data, ingredient_logits)
    choices = choose_on_dev(fold, "accuracy")

    def accuracy(weights):
        return accuracy_score(gold, sum(w * l for w, l in zip(weights, ingredient_logits)).argmax(axis=1))

    singles = [accuracy(np.eye(4)[i]) for i in range(4)]
    assert choices.scores == pytest.approx(singles, abs=1e-12)
    assert choices.best == int(np.argmax(singles))
    np.testing.assert_allclose(choices.greedy, greedy_soup(singles, accuracy))
    np.testing.assert_allclose(choices.greedy, [0, 0.5, 0.5, 0])  # adding 3 did not beat 1 alone; 2 did
    assert [c[2] for c in fold.calls[:4]] == [False] * 4  # ingredients scored as trained, with their own heads
    assert [c[1] for c in fold.calls[:4]] == [tuple(np.eye(4)[i]) for i in range(4)]
    assert len(fold.calls) == 4 + 3 and all(c[2] for c in fold.calls[4:])  # soups: the run's head rule
    assert {c[0] for c in fold.calls} == {"linear"}
