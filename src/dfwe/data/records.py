"""The records every stage passes around: one example of any shape, and a task with its splits."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Example:
    """One example of any shape. ``text`` is the first segment (utterance, claim, question), ``context`` the
    second (preceding turns, text pair, dialogue); ``context_keep`` says which end of it survives a cut."""

    id: str
    text: str
    context: str = ""
    context_keep: str = "end"
    label: str = ""  # classification; multiple choice: the right choice
    labels: tuple[str, ...] = ()  # multilabel
    choices: tuple[str, ...] = ()  # multiple choice
    answers: tuple[tuple[str, int], ...] = ()  # span: (answer text, character offset in context)
    dialogue_id: str = ""


@dataclass(frozen=True)
class Task:
    """A task: its shape, label set, headline metric and three splits."""

    name: str
    path: Path
    shape: str
    labels: tuple[str, ...]
    metric: str
    splits: dict[str, tuple[Example, ...]] = field(repr=False)
    ignore_labels: tuple[str, ...] = ()

    @property
    def label_index(self) -> dict[str, int]:
        return {label: i for i, label in enumerate(self.labels)}

    def describe(self) -> dict:
        """What a model trained on this task records about it (``dfwe.json``), enough to score it again."""
        return {"task": self.name, "shape": self.shape, "labels": list(self.labels), "metric": self.metric,
                "ignore_labels": list(self.ignore_labels)}

    @classmethod
    def described(cls, info: dict, path: Path) -> "Task":
        """The task a model was trained on, from its ``dfwe.json`` (no examples)."""
        return cls(name=info.get("task", path.name), path=path, shape=info["shape"], labels=tuple(info["labels"]),
                   metric=info.get("metric", "weighted_f1"), splits={},
                   ignore_labels=tuple(info.get("ignore_labels", ())))
