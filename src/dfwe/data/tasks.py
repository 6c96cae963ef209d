"""Task folders: ``train``, ``dev`` and ``test`` as ``.jsonl`` or ``.jsonl.gz``, one UTF-8 JSON object per line.

A folder may hold a ``task.json`` naming its shape (``type``: classification, multilabel, span,
multiple_choice), its labels, its headline ``metric`` and labels to leave out of metric averages
(``metric_ignore_labels``); see ``../shared/data/feta_friends/README.md``. A folder without one is
single-label classification scored by weighted F1, its labels read off train. Each shape parses its own
records (:mod:`dfwe.data.shapes`). Every record needs an ``id``; a label a task does not have, an answer outside
its context or a label that is not among its choices is bad input naming file and line.
"""

from __future__ import annotations

import gzip
import json
import zlib
from pathlib import Path
from typing import Annotated, Iterator, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from dfwe.data.records import Example, Task
from dfwe.data.shapes import SHAPES, get_shape
from dfwe.errors import BadInput
from dfwe.io import read_json
from dfwe.schema import validated

SPLITS = ("train", "dev", "test")
TASK_FILE = "task.json"


def split_file(path: Path) -> Path:
    """``path`` as given, or its gzipped (or plain) twin: ``x.jsonl`` and ``x.jsonl.gz`` stand for each other.

    The plain file wins when both exist; neither is bad input naming both.
    """
    if path.name.endswith(".jsonl.gz"):
        plain, gz = path.with_suffix(""), path
    elif path.name.endswith(".jsonl"):
        plain, gz = path, path.with_name(path.name + ".gz")
    else:
        plain = gz = path
    for candidate in dict.fromkeys((plain, gz)):
        if candidate.is_file():
            return candidate
    neither = "" if plain == gz else f" (and so is {gz.name})"
    raise BadInput(f"{plain}: missing{neither}; a task folder needs {', '.join(s + '.jsonl' for s in SPLITS)} "
                   "(each may be gzipped as .jsonl.gz)")


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """Numbered lines of a UTF-8 file, gunzipped when it ends in ``.gz``; bad bytes are bad input."""
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")) as handle:
            for number, raw in enumerate(handle, start=1):
                try:
                    yield number, raw.decode("utf-8")
                except UnicodeDecodeError as error:
                    raise BadInput(f"{path}:{number}: not UTF-8 (byte 0x{raw[error.start]:02x} at column "
                                   f"{error.start + 1}); re-save the file as UTF-8") from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise BadInput(f"{path}: not a readable gzip file ({error}); recompress it or save it as plain .jsonl") from None


def _records(path: Path) -> Iterator[tuple[dict, str]]:
    """Every JSON object of a split file with its ``file:line`` for messages."""
    for number, line in _lines(path):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise BadInput(f"{where}: not valid JSON ({error.msg})") from None
        if not isinstance(record, dict):
            raise BadInput(f"{where}: expected a JSON object")
        if "id" not in record:
            raise BadInput(f"{where}: missing field 'id'")
        if isinstance(record["id"], bool) or not isinstance(record["id"], str | int):
            raise BadInput(f"{where}: field 'id' must be a string or an integer, got {record['id']!r}")
        yield record, where


def read_jsonl(path: Path, context_turns: int = 3, shape_name: str = "classification",
               labels: tuple[str, ...] | None = None) -> tuple[Example, ...]:
    """The examples of one split file (or its ``.jsonl.gz`` twin), parsed by their shape; with ``labels``, each is
    checked against them (a label the task lacks is bad input naming file and line)."""
    shape = get_shape(shape_name)
    path = split_file(path)
    examples, lines = [], {}
    for record, where in _records(path):
        example = shape.parse(record, where, context_turns)
        if example.id in lines:  # ids pair predictions with records (and dev with test): one per record
            raise BadInput(f"{where}: id '{example.id}' is already the id of line {lines[example.id]}; give every "
                           "record of a split its own id")
        lines[example.id] = where.rsplit(":", 1)[1]
        if labels is not None:
            shape.check(example, labels, where)
        examples.append(example)
    if not examples:
        raise BadInput(f"{path}: no examples")
    return tuple(examples)


class TaskSpec(BaseModel):
    """A folder's ``task.json``: its shape, labels, headline metric, and labels left out of metric averages.

    Other keys (a name, a description, record counts) describe the task for people and are ignored.
    """

    model_config = ConfigDict(frozen=True, extra="ignore", allow_inf_nan=False)

    type: Literal[tuple(SHAPES)]  # type: ignore[valid-type]
    labels: list[Annotated[str, Field(min_length=1)]] | None = None
    metric: str | None = None
    metric_ignore_labels: list[str] = []

    @field_validator("labels")
    @classmethod
    def _each_label_once(cls, labels: list[str] | None) -> list[str] | None:
        repeated = [label for i, label in enumerate(labels or []) if label in (labels or [])[:i]]
        if repeated:
            raise ValueError(f"label '{repeated[0]}' is listed twice; list each label once")
        return labels

    @field_validator("metric")
    @classmethod
    def _metric_of_the_shape(cls, metric: str | None, info: ValidationInfo) -> str | None:
        metrics = SHAPES[info.data["type"]].metrics if "type" in info.data else ()
        if metric is not None and metrics and metric not in metrics:
            raise ValueError(f"{metric!r} is not one of the {info.data['type']} metrics ({', '.join(metrics)})")
        return metric


def read_task_file(path: Path) -> TaskSpec:
    """A folder's ``task.json`` (shape, labels, metric), or the single-label classification defaults."""
    file = path / TASK_FILE
    if not file.is_file():
        return TaskSpec(type="classification", metric="weighted_f1")
    raw = read_json(file)
    if not isinstance(raw, dict):
        raise BadInput(f"{file}: expected a JSON object with the task's 'type' (and 'labels', 'metric'), "
                       f"got a {type(raw).__name__}")
    if raw.get("type") not in SHAPES:
        raise BadInput(f"{file}: type {raw.get('type')!r} is not a task shape dfwe knows ({', '.join(SHAPES)})")
    return validated(TaskSpec, raw, str(file))


def load_task(path: Path, context_turns: int = 3, name: str | None = None) -> Task:
    """Load a task folder; every example of every split is checked against the task's labels."""
    if not path.is_dir():
        raise BadInput(f"{path}: task folder not found")
    spec = read_task_file(path)
    shape = get_shape(spec.type)
    declared = tuple(spec.labels) if spec.labels else None
    train = read_jsonl(path / "train.jsonl", context_turns, spec.type, declared)
    labels = declared or shape.label_space(train)
    if spec.type in ("classification", "multilabel") and len(labels) < 2:
        raise BadInput(f"{path}: needs at least two labels, found {list(labels)}")
    splits = {"train": train, **{split: read_jsonl(path / f"{split}.jsonl", context_turns, spec.type, labels)
                                 for split in SPLITS if split != "train"}}
    ignored = tuple(spec.metric_ignore_labels)
    unknown = [label for label in ignored if label not in labels]
    if unknown:
        raise BadInput(f"{path / TASK_FILE}: metric_ignore_labels names '{unknown[0]}', not one of its labels")
    return Task(name=name or path.name, path=path, shape=spec.type, labels=labels,
                metric=spec.metric or shape.metrics[0], ignore_labels=ignored, splits=splits)


def task_folders(data_dir: Path) -> list[str]:
    """The task folders of ``data_dir`` (those holding a train split), sorted."""
    return sorted(p.name for p in data_dir.iterdir() if p.is_dir() and any(p.glob("train.jsonl*")))


def load_tasks(data_dir: Path, names: list[str], context_turns: int = 3) -> dict[str, Task]:
    """Load several tasks from ``data_dir/<name>/``."""
    if not data_dir.is_dir():
        raise BadInput(f"{data_dir}: data directory not found (set data.data_dir or --data-dir)")
    return {name: load_task(data_dir / name, context_turns, name) for name in names}
