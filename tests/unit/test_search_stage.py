"""The two-stage search: per-layer weights after a coarse stage, pulled towards it by the anchor penalty."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import perturbed_copies

from dfwe.checkpoints import load_tokenizer
from dfwe.data.encode import Preprocessing
from dfwe.data.sets import ExampleSet
from dfwe.data.shapes import get_shape
from dfwe.data.tasks import load_task
from dfwe.merge.fold import FoldSpec, HeadRefit
from dfwe.search.run import SearchConfig, search_stage


@pytest.mark.parametrize("refit", [False, True])
def test_anchor_penalty_with_a_coarse_stage_pulls_towards_the_coarse_solution(tiny_base, small_task, tmp_path, refit):
    task = load_task(small_task)
    tokenizer = load_tokenizer(tiny_base)

    def example_set(split: str) -> ExampleSet:
        examples = task.splits[split]
        return ExampleSet(task, examples, get_shape("classification").encode(examples, tokenizer, task,
                                                                              Preprocessing(max_length=32)))

    folders = perturbed_copies(tiny_base, tmp_path, 3)
    spec = FoldSpec(tuple(folders), example_set("dev"), device="cpu",
                    refit=HeadRefit(example_set("train")) if refit else None)
    strength = 2.0
    config = SearchConfig(budget=8, coarse_budget=3, granularity="layer", objective="calibrated_loss",
                          penalty="anchor", penalty_strength=strength)
    start = np.array([0.5, 0.3, 0.2])
    outcome = search_stage([spec.build()], config, seed=0, out_dir=tmp_path, start=start)

    assert outcome.coarse is not None and outcome.coarse.candidates == 3 and outcome.result.candidates == 5
    coarse_best = outcome.coarse.best.weights[0]
    for stage, anchor in ((outcome.coarse, start), (outcome.result, coarse_best)):
        for record in stage.full:
            distance = float(((np.atleast_2d(record.weights) - anchor) ** 2).sum(axis=1).mean())
            assert record.objective == pytest.approx(record.metrics["calibrated_loss"] + strength * distance, abs=1e-9)
    np.testing.assert_allclose(outcome.coarse.records[0].weights[0], start, atol=1e-6)  # each stage starts at its anchor
    np.testing.assert_allclose(outcome.result.records[0].weights, np.tile(coarse_best, (len(outcome.weights), 1)),
                               atol=1e-6)
    assert outcome.weights.shape == (4, 3)  # embeddings, two layers, head
    assert (tmp_path / "journal-coarse.sqlite").is_file() and (tmp_path / "journal.sqlite").is_file()
