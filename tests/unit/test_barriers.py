"""Loss barriers between ingredients: which pairs are scored, and each barrier from the scores of its points."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import perturbed_copies

from dfwe.checkpoints import load_tokenizer
from dfwe.data.encode import Preprocessing
from dfwe.data.metrics import score
from dfwe.data.sets import ExampleSet
from dfwe.data.shapes import get_shape
from dfwe.data.tasks import load_task
from dfwe.eval.barriers import barrier_pairs, loss_barriers
from dfwe.eval.scores import EvalConfig
from dfwe.eval.seeds import mean_barriers
from dfwe.merge.fold import FoldSpec

NAMES = ["base-ft", "expert-ft:a", "expert-ft:b", "multitask-ft"]


def test_pairs_every_pair_those_of_base_ft_or_none():
    assert barrier_pairs(NAMES, "all") == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    assert barrier_pairs(NAMES, "base") == [(0, 1), (0, 2), (0, 3)]
    assert barrier_pairs(["expert-ft:a", "base-ft", "multitask-ft"], "base") == [(0, 1), (1, 2)]
    assert barrier_pairs(["expert-ft:a", "expert-ft:b", "multitask-ft"], "base") == [(0, 1), (0, 2), (1, 2)]
    assert barrier_pairs(NAMES, "none") == []


def barrier_row(a: str, b: str, value: float) -> dict:
    return {"a": a, "b": b, "loss": {"a": 1.0, "b": 2.0, "mid": 1.5 + value, "barrier": value}}


def test_seeds_run_with_every_pair_and_with_base_pairs_average_the_pairs_they_share_matched_by_name():
    every = {"barriers": [barrier_row("base-ft", "expert-ft:a", 0.1), barrier_row("base-ft", "multitask-ft", 0.3),
                          barrier_row("expert-ft:a", "multitask-ft", 0.5)]}
    base_only = {"barriers": [barrier_row("base-ft", "multitask-ft", -0.1), barrier_row("base-ft", "expert-ft:a", 0.3)]}
    rows = mean_barriers({"0": every, "1": base_only, "2": {"barriers": []}})
    assert [(r["a"], r["b"]) for r in rows] == [("base-ft", "expert-ft:a"), ("base-ft", "multitask-ft")]
    assert rows[0]["loss"]["barrier"] == pytest.approx(0.2) and rows[1]["loss"]["barrier"] == pytest.approx(0.1)
    assert rows[1]["loss"]["mid"] == pytest.approx(1.6)


def test_the_flag_of_earlier_configs_still_reads():
    assert EvalConfig(barriers=True).barriers == "all" and EvalConfig(barriers=False).barriers == "none"
    assert EvalConfig().barriers == "all" and EvalConfig(barriers="base").barriers == "base"
    with pytest.raises(ValueError):
        EvalConfig(barriers="some")


def test_base_pairs_are_the_same_rows_as_in_every_pair_and_each_barrier_is_mid_minus_the_mean_of_its_ends(
        tiny_base, small_task, tmp_path):
    task = load_task(small_task)
    encoded = get_shape("classification").encode(task.splits["dev"], load_tokenizer(tiny_base), task,
                                                 Preprocessing(max_length=32))
    dev = ExampleSet(task, task.splits["dev"], encoded)
    fold = FoldSpec(tuple(perturbed_copies(tiny_base, tmp_path, len(NAMES), scale=0.2)), dev, device="cpu").build()

    every = loss_barriers(fold, NAMES, "accuracy", "all")
    base = loss_barriers(fold, NAMES, "accuracy", "base")
    assert [(r["a"], r["b"]) for r in base] == [("base-ft", n) for n in NAMES[1:]]
    assert base == every[:3]  # the same merges, scored the same way
    assert loss_barriers(fold, NAMES, "accuracy", "none") == []

    fold.merge("linear", np.array([0.5, 0.0, 0.5, 0.0]))
    mid = score(fold.logits(fold.data), fold.data)
    row = base[1]  # base-ft with expert-ft:b
    for metric in ("loss", "calibrated_loss", "accuracy"):
        assert row[metric]["mid"] == pytest.approx(mid[metric], abs=1e-6)
        assert row[metric]["barrier"] == pytest.approx(row[metric]["mid"] - (row[metric]["a"] + row[metric]["b"]) / 2)
    assert row["loss"]["a"] != row["loss"]["b"]  # the perturbed copies are different models
