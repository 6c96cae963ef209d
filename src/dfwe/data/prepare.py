"""The data stage: tasks loaded and checked, few-sample sets drawn, every set encoded once.

Stages before it: :func:`locate_suite` (where the task folders are; the built-in demo suite is generated)
and :func:`dfwe.train.base.prepare_base` (the pretrained model and its tokenizer).
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
from pydantic import Field, field_validator, model_validator

from dfwe.cache import content_key
from dfwe.data.encode import ChoiceEncoding, ContextTurns, MaxLength, Preprocessing, Stride
from dfwe.data.records import Example, Task
from dfwe.data.sampling import answerless_windows, dialogue_fraction, few_shot_split, subsample
from dfwe.data.sets import ExampleSet
from dfwe.data.shapes import get_shape
from dfwe.data.synthetic import TASKS, SyntheticConfig, generate_suite
from dfwe.data.tasks import load_tasks
from dfwe.errors import BadInput
from dfwe.io import atomic_dir
from dfwe.schema import Frozen


class DataConfig(Frozen):
    """Which tasks, how many shots, how text becomes tokens."""

    data_dir: Path | None = None
    synthetic: SyntheticConfig | None = None
    target: str
    sources: list[str] = Field(min_length=1)
    # How the few-sample target sets are drawn: k examples per class (train and dev both from the train
    # split), or FETA's protocol: a seeded fraction of the train and of the dev *dialogues* of every task
    # (target and sources alike; test is always the full split).
    sampling: Literal["per_class", "dialogues"] = "per_class"
    shots: int = Field(32, ge=1)
    dev_shots: int | None = Field(None, ge=1)
    # dialogues: the fraction kept, one for all tasks or per task ({default: 0.1, question_answering: 0.5})
    fraction: float | dict[str, float] = 0.1
    # tokens per input: one value for all tasks, or per task ({default: 128, question_answering: 256})
    max_length: MaxLength | dict[str, MaxLength] = 128
    context_turns: ContextTurns = 3
    stride: Stride = 64  # span tasks: tokens shared by consecutive windows of a long context
    # multiple-choice tasks: "pairs" encodes each choice with the context; "mentions" reads the context once and
    # each choice at its mentions (for choices that are entities of the context; needs a fast tokenizer)
    choice_encoding: ChoiceEncoding = "pairs"
    # span tasks' train sets (target and sources): every window holding an answer and this seeded fraction of
    # the others, which are most of a long context's windows; dev, test and validation keep every window
    answerless_windows: float = Field(1.0, gt=0, le=1)
    source_max_examples: int | None = Field(None, ge=1)
    source_dev_max_examples: int = Field(500, ge=1)

    @field_validator("fraction")
    @classmethod
    def _fractions(cls, value: float | dict[str, float]) -> float | dict[str, float]:
        for fraction in ([value] if isinstance(value, float | int) else value.values()):
            if not 0 < fraction <= 1:
                raise ValueError(f"a fraction of dialogues must be in (0, 1], got {fraction}")
        return value

    def max_length_of(self, task: str) -> int:
        """Tokens per input of ``task``."""
        if isinstance(self.max_length, dict):
            return int(self.max_length.get(task, self.max_length.get("default", 128)))
        return int(self.max_length)

    def fraction_of(self, task: str) -> float:
        """The fraction of dialogues kept of ``task`` (``dialogues`` sampling)."""
        if isinstance(self.fraction, dict):
            return float(self.fraction.get(task, self.fraction.get("default", 0.1)))
        return float(self.fraction)

    @model_validator(mode="after")
    def _one_source_of_tasks(self) -> "DataConfig":
        if (self.data_dir is None) == (self.synthetic is None):
            raise ValueError("give exactly one of data.data_dir (task folders) or data.synthetic (the built-in suite)")
        if self.target in self.sources:
            raise ValueError(f"target '{self.target}' is also listed as a source")
        return self

    @property
    def resolved_dev_shots(self) -> int:
        return self.dev_shots if self.dev_shots is not None else self.shots


@dataclass(frozen=True)
class Suite:
    """The folder holding the task folders; for the generated demo suite also the words and unlabelled text
    its tiny base is built from."""

    folder: Path
    vocabulary: tuple[str, ...] = ()
    unlabelled: tuple[str, ...] = ()


@dataclass(frozen=True)
class TaskSplits:
    """The train and dev sets of one task as a stage reads them."""

    train: ExampleSet
    dev: ExampleSet
    prep: Preprocessing


@dataclass(frozen=True)
class PreparedData:
    """Everything the later stages read: the target's few-sample sets, its held-out sets, the sources."""

    target: Task
    train: ExampleSet
    dev: ExampleSet
    test: ExampleSet  # the held-out split scored at the end (official test, or official dev while developing)
    validation: ExampleSet | None  # official dev (minus few-sample dev), scored to compare options, never to choose
    sources: dict[str, TaskSplits]
    prep: Preprocessing

    def truncation(self) -> dict[str, int]:
        """How many examples of each target set had their own text cut to fit ``max_length``."""
        sets = {"train": self.train, "dev": self.dev, "test": self.test, "validation": self.validation}
        return {name: s.encoded.truncated for name, s in sets.items() if s is not None}


def locate_suite(data: DataConfig, work_dir: Path, seed: int) -> Suite:
    """The task folders of a run: ``data.data_dir``, or the built-in suite generated into ``work_dir``."""
    if data.synthetic is None:
        assert data.data_dir is not None
        if not data.data_dir.is_dir():
            raise BadInput(f"{data.data_dir}: data directory not found (set data.data_dir or --data-dir)")
        return Suite(data.data_dir)
    unknown = [t for t in [data.target, *data.sources] if t not in TASKS]
    if unknown:
        raise BadInput(f"data: task '{unknown[0]}' is not in the built-in suite ({', '.join(TASKS)})")
    folder = work_dir / f"suite-{content_key('suite', synthetic=data.synthetic.model_dump(), seed=seed)}"
    if not (folder / "vocabulary.json").is_file():
        with atomic_dir(folder) as tmp:
            vocabulary, texts = generate_suite(tmp, data.synthetic, seed)
            (tmp / "vocabulary.json").write_text(json.dumps({"vocabulary": vocabulary, "unlabelled": texts}))
    words = json.loads((folder / "vocabulary.json").read_text())
    return Suite(folder, tuple(words["vocabulary"]), tuple(words["unlabelled"]))


def _encoded(task: Task, examples: Sequence[Example], tokenizer, prep: Preprocessing) -> ExampleSet:
    examples = tuple(examples)
    return ExampleSet(task, examples, get_shape(task.shape).encode(examples, tokenizer, task, prep))


def _train_windows(train: ExampleSet, fraction: float, seed: int) -> ExampleSet:
    """A span train set with its answer-less windows sampled (``data.answerless_windows``); other sets as they are."""
    encoded = train.encoded
    if encoded.example_of is None or fraction >= 1.0:
        return train
    rng = np.random.default_rng([seed, 0xA115, zlib.crc32(train.task.name.encode())])
    has_answer = encoded.labels[:, 0].numpy() > 0  # a span row's target: (0, 0) where no answer fits
    rows = answerless_windows(encoded.example_of.numpy(), has_answer, fraction, rng)
    return ExampleSet(train.task, train.examples, replace(encoded.subset(rows), truncated=encoded.truncated))


def _target_sets(data: DataConfig, task: Task, seed: int) -> tuple[Sequence[Example], Sequence[Example]]:
    if data.sampling == "dialogues":
        fraction = data.fraction_of(task.name)
        return (dialogue_fraction(task.splits["train"], fraction, seed),
                dialogue_fraction(task.splits["dev"], fraction, seed))
    if task.shape != "classification":
        raise BadInput(f"data.sampling: per_class needs a classification target; '{task.name}' is {task.shape} "
                       "(use data.sampling: dialogues)")
    shots = few_shot_split(task, data.shots, data.resolved_dev_shots, seed)
    return shots.train, shots.dev


def _source_sets(data: DataConfig, task: Task, seed: int) -> tuple[Sequence[Example], Sequence[Example]]:
    if data.sampling == "dialogues":  # FETA: sources at the same reduction as the target
        fraction = data.fraction_of(task.name)
        return (dialogue_fraction(task.splits["train"], fraction, seed),
                dialogue_fraction(task.splits["dev"], fraction, seed))
    return (subsample(task.splits["train"], data.source_max_examples, seed),
            subsample(task.splits["dev"], data.source_dev_max_examples, seed))


def prepare_data(data: DataConfig, suite: Suite, tokenizer, seed: int, source_seed: int | None = None,
                 held_out_split: str = "test", validation: bool = False) -> PreparedData:
    """Load the tasks, draw the seed's few-sample sets, and encode every set the run will read.

    ``source_seed`` draws the sources' subsamples (the experts' data); it defaults to ``seed``.
    ``held_out_split`` is the official split scored at the end (``test``, or ``dev`` while developing);
    ``validation`` also encodes the official dev split less the few-sample dev examples, to compare options on.
    """
    def prep(task: str) -> Preprocessing:
        return Preprocessing(max_length=data.max_length_of(task), context_turns=data.context_turns, stride=data.stride,
                             choices=data.choice_encoding)

    tasks = load_tasks(suite.folder, [data.target, *data.sources], data.context_turns)
    target = tasks[data.target]
    train, dev = _target_sets(data, target, seed)
    dev_ids = {e.id for e in dev}
    source_seed = seed if source_seed is None else source_seed
    sources = {}
    for name in data.sources:
        source_train, source_dev = _source_sets(data, tasks[name], source_seed)
        sources[name] = TaskSplits(_train_windows(_encoded(tasks[name], source_train, tokenizer, prep(name)),
                                                  data.answerless_windows, source_seed),
                                   _encoded(tasks[name], source_dev, tokenizer, prep(name)), prep(name))
    target_prep = prep(target.name)
    return PreparedData(
        target=target,
        train=_train_windows(_encoded(target, train, tokenizer, target_prep), data.answerless_windows, seed),
        dev=_encoded(target, dev, tokenizer, target_prep),
        test=_encoded(target, [e for e in target.splits[held_out_split] if e.id not in dev_ids], tokenizer, target_prep),
        validation=(_encoded(target, [e for e in target.splits["dev"] if e.id not in dev_ids], tokenizer, target_prep)
                    if validation else None),
        sources=sources,
        prep=target_prep,
    )
