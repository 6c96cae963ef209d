"""Single-label classification of an utterance in its dialogue context, or of a text pair.

Two record forms: the Friends utterance form (``speaker``, ``utterance``, ``context`` turns oldest first,
``label``), read as ``speaker: utterance`` with the most recent ``context_turns`` turns as second segment;
and the plain form (``text``, optional ``text_pair``, ``label``), whose pair keeps its beginning when cut
(FETA's character identification lists the scene most recent turn first). Softmax over the labels on
pooled features; cross-entropy; accuracy, weighted / macro / micro F1.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification

from dfwe.data.encode import Batch, EncodedSet, Preprocessing, encode_pairs, pad_rows
from dfwe.data.records import Example, Task
from dfwe.data.shapes.base import TaskShape
from dfwe.errors import BadInput
from dfwe.modeling import DfweForSequenceClassification, DfwePreTrainedModel
from dfwe.stats import MetricStats, classification_stats


def read_text(record: dict[str, Any], where: str, context_turns: int) -> tuple[str, str, str]:
    """``(text, context, keep)`` of an utterance-form or plain-form record."""
    if "utterance" in record:
        speaker = record.get("speaker") or ""
        text = f"{speaker}: {record['utterance']}" if speaker else str(record["utterance"])
        turns = record.get("context") or []
        if not isinstance(turns, list):
            raise BadInput(f"{where}: field 'context' must be a list of strings")
        return text, " ".join(str(t) for t in turns[len(turns) - context_turns:]) if context_turns else "", "end"
    if "text" in record:
        return str(record["text"]), str(record.get("text_pair") or ""), "start"
    raise BadInput(f"{where}: needs either 'utterance' (Friends form) or 'text' (plain form)")


def encode_texts(examples: Sequence[Example], tokenizer: Any, max_length: int) -> tuple[list, list, int]:
    """Ids and types of every example's text and context, each context cut on the side its form keeps."""
    ids: list[list[int]] = [[] for _ in examples]
    types: list[list[int]] = [[] for _ in examples]
    truncated = 0
    for keep in ("end", "start"):
        rows = [i for i, e in enumerate(examples) if e.context_keep == keep]
        if rows:
            pairs = encode_pairs(tokenizer, [examples[i].text for i in rows], [examples[i].context for i in rows],
                                 max_length, keep)
            for j, i in enumerate(rows):
                ids[i], types[i] = pairs.ids[j], pairs.types[j]
            truncated += pairs.cut
    return ids, types, truncated


def encoded_set(examples: Sequence[Example], tokenizer: Any, max_length: int, labels: torch.Tensor) -> EncodedSet:
    """An :class:`EncodedSet` of one row per example with the given targets."""
    ids, types, truncated = encode_texts(examples, tokenizer, max_length)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return EncodedSet(ids=tuple(e.id for e in examples), input_ids=pad_rows(ids, pad), token_type_ids=pad_rows(types, 0),
                      lengths=torch.tensor([len(r) for r in ids], dtype=torch.long), labels=labels, pad_id=pad,
                      truncated=truncated)


class Classification(TaskShape):
    name = "classification"
    auto_class = AutoModelForSequenceClassification
    model_class = DfweForSequenceClassification
    metrics = ("accuracy", "weighted_f1", "macro_f1", "micro_f1")

    def parse(self, record: dict[str, Any], where: str, context_turns: int) -> Example:
        if "label" not in record:
            raise BadInput(f"{where}: missing field 'label'")
        label = record["label"]
        if isinstance(label, bool) or not isinstance(label, str | int) or label == "":
            raise BadInput(f"{where}: field 'label' must be a label name, got {label!r}; give every record its label")
        text, context, keep = read_text(record, where, context_turns)
        return Example(id=str(record["id"]), text=text, context=context, context_keep=keep, label=str(label),
                       dialogue_id=str(record.get("dialogue_id") or ""))

    def label_space(self, examples: Sequence[Example]) -> tuple[str, ...]:
        return tuple(sorted({e.label for e in examples}))

    def check(self, example: Example, labels: tuple[str, ...], where: str) -> None:
        if example.label not in labels:
            raise BadInput(f"{where}: label '{example.label}' is not one of the task's labels ({', '.join(labels)})")

    def encode(self, examples: Sequence[Example], tokenizer: Any, task: Task, prep: Preprocessing) -> EncodedSet:
        index = task.label_index
        return encoded_set(examples, tokenizer, prep.max_length,
                           torch.tensor([index[e.label] for e in examples], dtype=torch.long))

    def features(self, model: DfwePreTrainedModel, batch: Batch) -> torch.Tensor:
        return model.features(**batch.model_inputs(), **batch.trunk_inputs())

    def head_logits(self, model: DfwePreTrainedModel, features: torch.Tensor, batch: Batch) -> torch.Tensor:
        return model.head(model.dropout(features)).float()

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(logits, labels)

    def decode(self, logits: np.ndarray, data: EncodedSet, examples: Sequence[Example], task: Task) -> list[Any]:
        return [task.labels[i] for i in logits.argmax(axis=1)]

    def metric_stats(self, predictions: Sequence[Any], examples: Sequence[Example], task: Task) -> MetricStats:
        index = task.label_index
        return classification_stats([index[e.label] for e in examples], [index[p] for p in predictions],
                                    len(task.labels), [index[label] for label in task.ignore_labels])

    def submission(self, prediction: Any, task: Task) -> str:
        return str(task.label_index[prediction])  # FETA: integer class ids
