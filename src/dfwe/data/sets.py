"""An example set: a task's examples with their encoding, what every stage that scores or trains a model reads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from dfwe.data.encode import EncodedSet
from dfwe.data.records import Example, Task
from dfwe.data.shapes import TaskShape, get_shape


@dataclass(frozen=True)
class ExampleSet:
    """A task's examples, their encoding and the task itself: everything that scoring a model needs."""

    task: Task
    examples: tuple[Example, ...]
    encoded: EncodedSet

    def __post_init__(self) -> None:
        # metrics pair the i-th decoded prediction with the i-th example: an encoding of other examples would
        # score silently wrong
        if self.encoded.num_examples != len(self.examples):
            raise ValueError(f"an encoding of {self.encoded.num_examples} examples paired with {len(self.examples)}")

    @property
    def shape(self) -> TaskShape:
        return get_shape(self.task.shape)

    def subset(self, indices: Sequence[int] | np.ndarray) -> "ExampleSet":
        """The examples at ``indices`` (positions), with all of their rows."""
        indices = [int(i) for i in indices]
        if self.encoded.example_of is None:
            rows = indices
        else:  # a long example's windows travel together
            by_example: dict[int, list[int]] = {}
            for row, example in enumerate(self.encoded.example_of.tolist()):
                by_example.setdefault(example, []).append(row)
            rows = [row for i in indices for row in by_example[i]]
        return ExampleSet(self.task, tuple(self.examples[i] for i in indices), self.encoded.subset(rows))
