"""Search: every backend behind one ask/tell interface, seeded and exact in budget; spaces; objectives;
journal replay; successive halving."""

from __future__ import annotations

import numpy as np
import pytest

from dfwe.errors import BadInput
from dfwe.search.journal import Journal
from dfwe.search.objective import Score, penalty_value
from dfwe.search.optimizers import OPTIMIZERS, make_optimizer
from dfwe.search.run import Halving, run_search
from dfwe.search.spaces import make_space

TARGET = np.array([[0.6, 0.3, 0.1]])


def quadratic_scorer(calls: list):
    """Score = squared distance of the weights from TARGET; low fidelity adds a fixed offset."""
    def score(batch, fidelity):
        out = []
        for weights in batch:
            calls.append((weights.copy(), fidelity))
            value = float(((weights - TARGET) ** 2).sum()) + (0.0 if fidelity >= 1 else 0.01)
            out.append((Score(value, {"loss": value}, 0.0), "local"))
        return out
    return score


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_backend_scores_exactly_the_budget_and_is_seeded(name):
    space = make_space("simplex", 1, 3)
    runs = []
    for _ in range(2):
        calls: list = []
        result = run_search(space, make_optimizer(name, space, seed=3, budget=23), quadratic_scorer(calls), 23)
        assert len(calls) == 23 and result.candidates == 23 and len(result.records) == 23
        runs.append([r.x for r in result.records])
    np.testing.assert_array_equal(np.array(runs[0]), np.array(runs[1]))
    other = run_search(space, make_optimizer(name, space, seed=4, budget=23), quadratic_scorer([]), 23)
    assert not np.array_equal(np.array(runs[0][1:]), np.array([r.x for r in other.records])[1:])


def test_search_starts_at_its_start_point():
    space = make_space("simplex", 1, 3, init=np.array([0.2, 0.3, 0.5]))
    result = run_search(space, make_optimizer("cma", space, seed=0, budget=5), quadratic_scorer([]), 5)
    np.testing.assert_allclose(result.records[0].weights, [[0.2, 0.3, 0.5]])
    assert result.best.objective <= result.records[0].objective


@pytest.mark.parametrize("name", ["cma", "ngopt", "optuna-tpe"])
def test_backends_improve_on_their_start(name):
    space = make_space("simplex", 1, 3)
    result = run_search(space, make_optimizer(name, space, seed=0, budget=60, sigma0=0.5), quadratic_scorer([]), 60)
    assert result.best.objective < 0.5 * result.records[0].objective


def test_cma_budget_cuts_a_generation_short():
    space = make_space("simplex", 1, 3)
    optimizer = make_optimizer("cma", space, seed=0, budget=10)
    popsize = optimizer._es.popsize
    assert 10 % popsize != 0  # the budget ends mid-generation
    result = run_search(space, optimizer, quadratic_scorer([]), 10)
    assert result.candidates == 10


def test_search_spaces_map_to_their_constraints():
    rng = np.random.default_rng(0)
    simplex, affine = make_space("simplex", 2, 3), make_space("affine", 2, 3)
    box, scales = make_space("box", 1, 3), make_space("task_arithmetic", 1, 2)
    for _ in range(20):
        w = simplex.to_weights(rng.normal(size=6) * 3)
        assert np.all(w >= 0) and np.allclose(w.sum(axis=1), 1)
        a = affine.to_weights(rng.uniform(-1, 2, size=6))
        assert np.allclose(a.sum(axis=1), 1)
    assert affine.to_weights(np.array([2.0, -1.0, -1.0, 0, 0, 0])).min() < 0
    np.testing.assert_allclose(box.to_weights(np.array([-0.5, 0.4, 3.0])), [[0.0, 0.4, 1.0]])
    np.testing.assert_allclose(scales.to_weights(np.array([1.2, -0.2])), [[1.2, -0.2]])
    np.testing.assert_allclose(simplex.to_weights(simplex.x0), np.full((2, 3), 1 / 3))
    w = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    np.testing.assert_allclose(simplex.to_weights(simplex.to_x(w)), w)
    assert scales.method == "task_arithmetic" and simplex.method == "linear"


def test_penalties_have_known_values():
    w = np.array([[0.5, 0.5, 0.0]])
    assert penalty_value(w, "l1", 3.0) == pytest.approx(3.0 * 1.0 / 3)
    assert penalty_value(w, "uniform", 2.0) == pytest.approx(2.0 * (2 * (1 / 6) ** 2 + (1 / 3) ** 2))
    assert penalty_value(w, "anchor", 1.0, np.array([[1.0, 0, 0]])) == pytest.approx(0.5)
    assert penalty_value(w, "none", 5.0) == 0.0


def test_journal_replay_rescores_nothing_and_continues_identically(tmp_path):
    space = make_space("simplex", 1, 3)
    full_calls: list = []
    full = run_search(space, make_optimizer("cma", space, 0, 30), quadratic_scorer(full_calls), 30)

    fingerprint = {"test": 1}
    first_calls: list = []
    journal = Journal(tmp_path / "j.sqlite", fingerprint)
    run_search(space, make_optimizer("cma", space, 0, 12), quadratic_scorer(first_calls), 12, journal)
    journal.close()
    resumed_calls: list = []
    journal = Journal(tmp_path / "j.sqlite", fingerprint)
    resumed = run_search(space, make_optimizer("cma", space, 0, 30), quadratic_scorer(resumed_calls), 30, journal)
    assert len(first_calls) == 12 and len(resumed_calls) == 18
    np.testing.assert_array_equal(np.array([r.x for r in resumed.records]), np.array([r.x for r in full.records]))
    np.testing.assert_array_equal(resumed.best.weights, full.best.weights)
    assert len(journal.records()) == 30


def test_journal_of_another_search_is_refused(tmp_path):
    Journal(tmp_path / "j.sqlite", {"seed": 0}).close()
    with pytest.raises(BadInput, match="differs in seed"):
        Journal(tmp_path / "j.sqlite", {"seed": 1})
    space = make_space("simplex", 1, 3)
    journal = Journal(tmp_path / "k.sqlite", {"a": 1})
    run_search(space, make_optimizer("random", space, 0, 5), quadratic_scorer([]), 5, journal)
    with pytest.raises(BadInput, match="differs from what the optimiser asks"):
        run_search(space, make_optimizer("random", space, 9, 5), quadratic_scorer([]), 5, journal)


def test_corrupt_journal_is_reported_not_replaced(tmp_path):
    path = tmp_path / "journal.sqlite"
    path.write_bytes(b"this is not an sqlite database, just bytes" * 100)
    before = path.read_bytes()
    with pytest.raises(BadInput, match="corrupt or not a dfwe journal"):
        Journal(path, {"seed": 0})
    assert path.read_bytes() == before


def test_successive_halving_saves_full_evaluations():
    space = make_space("simplex", 1, 3)
    calls: list = []
    result = run_search(space, make_optimizer("random", space, 0, 19), quadratic_scorer(calls), 19, batch=9,
                        halving=Halving(fraction=0.34, eta=3))
    assert result.candidates == 19  # the start point, then two batches of nine
    assert [f for _, f in calls].count(0.34) == 18 and [f for _, f in calls].count(1.0) == 7
    assert result.full_evaluations_saved == 12
    lows = result.records[1:10]
    assert all(r.fidelity < 1 for r in lows)
    promoted = {tuple(r.x) for r in result.records[10:13]}
    best_three = sorted(lows, key=lambda r: r.objective)[:3]
    assert promoted == {tuple(r.x) for r in best_three}
    assert result.best.fidelity == 1.0


def test_budget_below_one_is_bad_input():
    space = make_space("simplex", 1, 3)
    with pytest.raises(BadInput, match="budget"):
        run_search(space, make_optimizer("random", space, 0, 1), quadratic_scorer([]), 0)


def test_unknown_optimizer_and_space_are_bad_input():
    with pytest.raises(BadInput, match="unknown optimizer 'adam'"):
        make_optimizer("adam", make_space("simplex", 1, 3), 0, 5)
    with pytest.raises(BadInput, match="unknown search space 'sphere'"):
        make_space("sphere", 1, 3)


def test_references_are_scored_after_the_budget_untold_and_kept_when_best(tmp_path):
    """The soups a run compares dfwe with are scored after the optimiser's budget: the optimiser's own path is the
    same as without them, the winner is the best point of all (a reference when it is best), and a journal written
    before they existed resumes and scores only them."""
    space = make_space("simplex", 1, 3)
    plain = run_search(space, make_optimizer("cma", space, 0, 8), quadratic_scorer([]), 8, Journal(tmp_path / "j", {}))
    references = {"uniform-soup": np.full((1, 3), 1 / 3), "exact": TARGET}
    calls: list = []
    result = run_search(space, make_optimizer("cma", space, 0, 8), quadratic_scorer(calls), 8,
                        Journal(tmp_path / "j", {}), references=references)
    assert len(calls) == 2 and result.candidates == 10 == len(result.records)  # the 8 replayed, the two scored
    np.testing.assert_array_equal([r.x for r in result.records[:8]], [r.x for r in plain.records])
    np.testing.assert_allclose(result.records[8].weights, [[1 / 3, 1 / 3, 1 / 3]])
    assert result.references == {8: "uniform-soup", 9: "exact"}
    assert result.kept == "exact" and result.best.idx == 9 and result.best.objective == pytest.approx(0.0, abs=1e-12)
    assert plain.kept == "search" and plain.best.objective > 0.0
    corner: list = []
    far = run_search(space, make_optimizer("cma", space, 0, 8), quadratic_scorer(corner), 8,
                     references={"corner": np.array([[0.0, 0.0, 1.0]])})
    assert far.kept == "search" and far.best.objective == plain.best.objective
    # scored at its exact weights, zeros included (a softmax of the point's x would give 1e-9, not 0)
    np.testing.assert_array_equal(corner[-1][0], [[0.0, 0.0, 1.0]])
    np.testing.assert_array_equal(far.records[-1].weights, [[0.0, 0.0, 1.0]])
