"""Task folders: ``train.jsonl``, ``dev.jsonl``, ``test.jsonl``, one JSON object per line.

Two record formats are understood:

* the Friends dialogue format (``speaker``, ``utterance``, ``context``, ``label``), rendered as the
  preceding context followed by ``speaker: utterance``;
* a plain format (``text``, optional ``text_pair``, ``label``).

Every record also needs an ``id``. A label in dev or test that train never saw is bad input.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from dfwe.errors import BadInput

SPLITS = ("train", "dev", "test")


@dataclass(frozen=True)
class Example:
    """One labelled example. ``context`` is the optional first segment (preceding dialogue turns)."""

    id: str
    text: str
    context: str
    label: str


@dataclass(frozen=True)
class Task:
    """A classification task: its label set (sorted) and its three splits."""

    name: str
    path: Path
    labels: tuple[str, ...]
    splits: dict[str, tuple[Example, ...]]

    @property
    def label_index(self) -> dict[str, int]:
        return {label: i for i, label in enumerate(self.labels)}


def render_record(record: dict, where: str, context_turns: int) -> Example:
    """Turn one JSON record into an :class:`Example` (Friends or plain format)."""
    for field in ("id", "label"):
        if field not in record:
            raise BadInput(f"{where}: missing field '{field}'")
    if "utterance" in record:
        speaker = record.get("speaker") or ""
        text = f"{speaker}: {record['utterance']}" if speaker else str(record["utterance"])
        turns = record.get("context") or []
        if not isinstance(turns, list):
            raise BadInput(f"{where}: field 'context' must be a list of strings")
        context = " ".join(str(turn) for turn in turns[len(turns) - context_turns :]) if context_turns else ""
    elif "text" in record:
        text, context = str(record["text"]), str(record.get("text_pair") or "")
    else:
        raise BadInput(f"{where}: needs either 'utterance' (Friends format) or 'text'")
    return Example(id=str(record["id"]), text=text, context=context, label=str(record["label"]))


def read_jsonl(path: Path, context_turns: int) -> tuple[Example, ...]:
    """Read one split file; a malformed line is reported with its line number."""
    if not path.is_file():
        raise BadInput(f"{path}: missing; a task folder needs {', '.join(s + '.jsonl' for s in SPLITS)}")
    examples = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise BadInput(f"{path}:{number}: not valid JSON ({error.msg})") from None
            if not isinstance(record, dict):
                raise BadInput(f"{path}:{number}: expected a JSON object")
            examples.append(render_record(record, f"{path}:{number}", context_turns))
    if not examples:
        raise BadInput(f"{path}: no examples")
    return tuple(examples)


def load_task(path: Path, context_turns: int = 3, name: str | None = None) -> Task:
    """Load a task folder and check that dev/test only use labels seen in train."""
    if not path.is_dir():
        raise BadInput(f"{path}: task folder not found")
    splits = {split: read_jsonl(path / f"{split}.jsonl", context_turns) for split in SPLITS}
    labels = tuple(sorted({example.label for example in splits["train"]}))
    if len(labels) < 2:
        raise BadInput(f"{path / 'train.jsonl'}: needs at least two labels, found {list(labels)}")
    for split in ("dev", "test"):
        for example in splits[split]:
            if example.label not in labels:
                raise BadInput(
                    f"{path / (split + '.jsonl')}: label '{example.label}' (id {example.id}) never occurs in "
                    f"{path / 'train.jsonl'}; known labels: {', '.join(labels)}"
                )
    return Task(name=name or path.name, path=path, labels=labels, splits=splits)


def load_tasks(data_dir: Path, names: list[str], context_turns: int = 3) -> dict[str, Task]:
    """Load several tasks from ``data_dir/<name>/``."""
    if not data_dir.is_dir():
        raise BadInput(f"{data_dir}: data directory not found (set data.data_dir or --data-dir)")
    return {name: load_task(data_dir / name, context_turns, name) for name in names}
