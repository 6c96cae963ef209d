"""Few-sample draws: deterministic per seed, k per class, from train only, train and dev disjoint; FETA-Friends'
dialogue fractions as its README specifies."""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import replace

import pytest
from conftest import FRIENDS

from dfwe.data.sampling import dialogue_fraction, few_shot_split, subsample
from dfwe.data.tasks import load_task
from dfwe.errors import BadInput


def test_same_seed_same_draw_other_seed_other_draw(small_task):
    task = load_task(small_task)
    a, b, c = (few_shot_split(task, 4, 3, seed) for seed in (0, 0, 1))
    assert [e.id for e in a.train] == [e.id for e in b.train]
    assert [e.id for e in a.dev] == [e.id for e in b.dev]
    assert [e.id for e in a.train] != [e.id for e in c.train]


def test_class_balanced_disjoint_and_from_train_only(small_task):
    task = load_task(small_task)
    split = few_shot_split(task, 4, 3, seed=7)
    assert Counter(e.label for e in split.train) == {"neg": 4, "neu": 4, "pos": 4}
    assert Counter(e.label for e in split.dev) == {"neg": 3, "neu": 3, "pos": 3}
    train_ids = {e.id for e in task.splits["train"]}
    held_out = {e.id for s in ("dev", "test") for e in task.splits[s]}
    drawn = [e.id for e in (*split.train, *split.dev)]
    assert len(set(drawn)) == len(drawn)
    assert set(drawn) <= train_ids
    assert not set(drawn) & held_out


def test_too_few_examples_for_k_is_bad_input(small_task):
    task = load_task(small_task)
    with pytest.raises(BadInput, match="label 'neg' has 20 train examples"):
        few_shot_split(task, 15, 10, seed=0)


def test_subsample_is_seeded_and_bounded(small_task):
    examples = load_task(small_task).splits["train"]
    assert subsample(examples, 10, 3) == subsample(examples, 10, 3)
    assert len(subsample(examples, 10, 3)) == 10
    assert subsample(examples, None, 3) == tuple(examples)


@pytest.mark.parametrize(("fraction", "seed", "kept"), [(0.12, 0, 3), (0.12, 5, 3), (0.5, 1, 10), (1.0, 2, 20)])
def test_dialogue_fraction_follows_the_feta_friends_rule(small_task, fraction, seed, kept):
    examples = load_task(small_task).splits["train"]  # 20 dialogues tr-d0..tr-d19 of 3 examples each
    # the README's rule, by hand: sorted distinct dialogue ids, random.Random(seed).shuffle, first ceil(f * n)
    dialogues = sorted({e.dialogue_id for e in examples})
    assert dialogues[:3] == ["tr-d0", "tr-d1", "tr-d10"]  # sorted as strings, not in order of appearance
    random.Random(seed).shuffle(dialogues)
    chosen = set(dialogues[: math.ceil(fraction * len(dialogues))])
    assert len(chosen) == kept
    drawn = dialogue_fraction(examples, fraction, seed)
    assert drawn == tuple(e for e in examples if e.dialogue_id in chosen)  # whole dialogues, in file order
    assert Counter(e.dialogue_id for e in drawn) == {d: 3 for d in chosen}
    assert dialogue_fraction(examples, fraction, seed) == drawn


def test_dialogue_fraction_depends_on_the_seed_and_needs_dialogue_ids(small_task):
    examples = load_task(small_task).splits["train"]
    draws = {frozenset(e.dialogue_id for e in dialogue_fraction(examples, 0.25, seed)) for seed in range(6)}
    assert len(draws) > 1
    no_ids = [replace(e, dialogue_id="") for e in examples]
    with pytest.raises(BadInput, match="dialogue_id"):
        dialogue_fraction(no_ids, 0.5, 0)


@pytest.mark.realdata
@pytest.mark.skipif(not FRIENDS.is_dir(), reason="../shared/data/friends is absent")
def test_real_meld_draws_never_touch_official_dev_or_test():
    task = load_task(FRIENDS / "meld_emotion")
    split = few_shot_split(task, 32, 32, seed=0)
    assert Counter(e.label for e in split.train) == {label: 32 for label in task.labels}
    held_out = {e.id for s in ("dev", "test") for e in task.splits[s]}
    assert not {e.id for e in (*split.train, *split.dev)} & held_out
