"""Seeded few-sample draws.

* ``per_class``: k examples per class for the target's train set and a disjoint k' per class for its dev
  set, both from the task's *train* split (the official dev and test splits are never touched);
* ``dialogues`` (FETA's protocol): a seeded fraction of the train split's dialogues and, separately, of the
  dev split's dialogues, whole dialogues at a time, for the target and every source alike.

And one draw inside a set: the windows of a span task's train set that hold no answer, of which a seeded
fraction is kept (:func:`answerless_windows`).
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from dfwe.data.records import Example, Task
from dfwe.errors import BadInput


@dataclass(frozen=True)
class FewShotSplit:
    """The few-sample sets one seed sees."""

    train: tuple[Example, ...]
    dev: tuple[Example, ...]


def draw_per_class(
    pool: Sequence[Example], labels: Sequence[str], counts: Sequence[int], rng: np.random.Generator
) -> list[tuple[Example, ...]]:
    """Draw ``counts[j]`` disjoint sets of examples per label from ``pool``, without replacement.

    Draws happen label by label in the order of ``labels``, each a prefix of one seeded permutation, so
    the result depends only on the pool's order, the counts and the generator's state.
    """
    by_label: dict[str, list[Example]] = defaultdict(list)
    for example in pool:
        by_label[example.label].append(example)
    draws: list[list[Example]] = [[] for _ in counts]
    for label in labels:
        members = by_label.get(label, [])
        if len(members) < sum(counts):
            raise BadInput(
                f"label '{label}' has {len(members)} train examples, fewer than the {sum(counts)} needed "
                f"({' + '.join(map(str, counts))} per class); lower data.shots / data.dev_shots"
            )
        order = rng.permutation(len(members))
        start = 0
        for draw, count in zip(draws, counts):
            draw.extend(members[i] for i in order[start : start + count])
            start += count
    return [tuple(draw) for draw in draws]


def few_shot_split(task: Task, shots: int, dev_shots: int, seed: int) -> FewShotSplit:
    """k examples per class for target train and a separate k' per class for dev, both from train."""
    rng = np.random.default_rng([seed, 0x5EED])
    train, dev = draw_per_class(task.splits["train"], task.labels, [shots, dev_shots], rng)
    return FewShotSplit(train=train, dev=dev)


def subsample(examples: Sequence[Example], limit: int | None, seed: int) -> tuple[Example, ...]:
    """A seeded random subset of at most ``limit`` examples (all of them when ``limit`` is None)."""
    if limit is None or limit >= len(examples):
        return tuple(examples)
    rng = np.random.default_rng([seed, 0x5AB])
    keep = np.sort(rng.choice(len(examples), size=limit, replace=False))
    return tuple(examples[i] for i in keep)


def dialogue_fraction(examples: Sequence[Example], fraction: float, seed: int) -> tuple[Example, ...]:
    """The examples of a seeded ``fraction`` of the dialogues, as FETA-Friends' README specifies: the sorted
    distinct dialogue ids, shuffled with ``random.Random(seed)``, the first ``ceil(fraction * n)`` kept."""
    dialogues = sorted({e.dialogue_id for e in examples})
    if dialogues == [""]:
        raise BadInput("dialogue sampling needs a 'dialogue_id' on every record; use data.sampling: per_class")
    random.Random(seed).shuffle(dialogues)
    kept = set(dialogues[: math.ceil(fraction * len(dialogues))])
    return tuple(e for e in examples if e.dialogue_id in kept)


def answerless_windows(example_of: np.ndarray, has_answer: np.ndarray, fraction: float,
                       rng: np.random.Generator) -> np.ndarray:
    """The rows of a windowed set to keep, in order: every window holding an answer and
    ``round(fraction * n)`` of the ``n`` that hold none, drawn without replacement; an example left with no
    window keeps its first one, so every example stays in the set."""
    if fraction >= 1.0:
        return np.arange(len(example_of))
    empty = np.flatnonzero(~has_answer)
    keep = has_answer.copy()
    keep[rng.choice(empty, size=round(fraction * len(empty)), replace=False)] = True
    examples, first = np.unique(example_of, return_index=True)
    keep[first[~np.isin(examples, example_of[keep])]] = True
    return np.flatnonzero(keep)
