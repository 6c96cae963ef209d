"""Multilabel classification of a text pair: every record carries a non-empty set of labels.

Records take the plain form (``text``, optional ``text_pair``, ``labels``: a non-empty list of label
names) or the Friends utterance form, read as :mod:`dfwe.data.shapes.classification` reads them (the pair keeps
its beginning when cut). One sigmoid per label on pooled features; binary cross-entropy; a label is
predicted when its probability exceeds 0.5, and the most probable one when none does (FETA's relation
extraction never has an empty set: a pair without a relation is labelled ``unanswerable``). Scored by micro
F1 over the labels, the task's ``metric_ignore_labels`` left out.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification

from dfwe.data.encode import Batch, EncodedSet, Preprocessing
from dfwe.data.records import Example, Task
from dfwe.data.shapes.base import TaskShape
from dfwe.data.shapes.classification import encoded_set, read_text
from dfwe.errors import BadInput
from dfwe.modeling import DfweForSequenceClassification, DfwePreTrainedModel
from dfwe.stats import MetricStats


def label_matrix(label_sets: Sequence[Sequence[str]], labels: Sequence[str]) -> np.ndarray:
    """``[n, len(labels)]`` 0/1 matrix: row i marks the labels of ``label_sets[i]``."""
    index = {label: j for j, label in enumerate(labels)}
    out = np.zeros((len(label_sets), len(labels)), dtype=np.float64)
    for i, chosen in enumerate(label_sets):
        out[i, [index[label] for label in chosen]] = 1.0
    return out


def micro_f1_stats(gold: np.ndarray, pred: np.ndarray, kept: np.ndarray) -> MetricStats:
    """Per-example ``(tp, fp, fn)`` over the ``kept`` label columns of 0/1 matrices, finalised to micro F1."""
    gold, pred = gold[:, kept], pred[:, kept]
    stats = np.stack([(gold * pred).sum(axis=1), ((1 - gold) * pred).sum(axis=1), (gold * (1 - pred)).sum(axis=1)],
                     axis=1)

    def finalize(totals: np.ndarray) -> dict[str, np.ndarray]:
        tp, fp, fn = totals[..., 0], totals[..., 1], totals[..., 2]
        # totals are whole counts (stats and bootstrap weights are integers), so a positive denominator is >= 1
        # and max(den, 1) only turns 0/0 into 0, sklearn's zero_division default
        return {"micro_f1": 2 * tp / np.maximum(2 * tp + fp + fn, 1.0)}

    return MetricStats(stats, finalize)


class Multilabel(TaskShape):
    name = "multilabel"
    auto_class = AutoModelForSequenceClassification
    model_class = DfweForSequenceClassification
    metrics = ("micro_f1",)
    probe_revision = 1  # 1: one logistic regression per label (0 averaged their losses)

    def parse(self, record: dict[str, Any], where: str, context_turns: int) -> Example:
        value = record.get("labels")
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
            raise BadInput(f"{where}: field 'labels' must be a non-empty list of label names, got {value!r}; "
                           "give every record at least one label")
        text, context, keep = read_text(record, where, context_turns)
        return Example(id=str(record["id"]), text=text, context=context, context_keep=keep,
                       labels=tuple(dict.fromkeys(value)), dialogue_id=str(record.get("dialogue_id") or ""))

    def label_space(self, examples: Sequence[Example]) -> tuple[str, ...]:
        return tuple(sorted({label for e in examples for label in e.labels}))

    def check(self, example: Example, labels: tuple[str, ...], where: str) -> None:
        for label in example.labels:
            if label not in labels:
                raise BadInput(f"{where}: label {label!r} is not one of the task's labels ({', '.join(labels)})")

    def encode(self, examples: Sequence[Example], tokenizer: Any, task: Task, prep: Preprocessing) -> EncodedSet:
        targets = torch.as_tensor(label_matrix([e.labels for e in examples], task.labels), dtype=torch.float32)
        return encoded_set(examples, tokenizer, prep.max_length, targets)

    def features(self, model: DfwePreTrainedModel, batch: Batch) -> torch.Tensor:
        return model.features(**batch.model_inputs(), **batch.trunk_inputs())

    def head_logits(self, model: DfwePreTrainedModel, features: torch.Tensor, batch: Batch) -> torch.Tensor:
        return model.head(model.dropout(features)).float()

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))

    def sample_labels(self, logits: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        # one Bernoulli draw per label, as the loss models them
        return torch.bernoulli(torch.sigmoid(logits.detach().float()), generator=generator)

    def probe_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        # one logistic regression per label (scikit-learn's one-vs-rest): their losses add up per example. The
        # training loss's mean over labels would make the probe's L2 penalty count once per label (34 times on
        # FETA's relation extraction), and the probe would predict the label priors alone.
        return self.loss(logits, labels) * logits.shape[-1]

    def decode(self, logits: np.ndarray, data: EncodedSet, examples: Sequence[Example], task: Task) -> list[Any]:
        # sigmoid(z) > 0.5 exactly when z > 0 (no overflow for large |z|)
        chosen = logits > 0
        fallback = logits.argmax(axis=1)
        return [tuple(task.labels[j] for j in np.flatnonzero(row)) if row.any() else (task.labels[fallback[i]],)
                for i, row in enumerate(chosen)]

    def metric_stats(self, predictions: Sequence[Any], examples: Sequence[Example], task: Task) -> MetricStats:
        kept = np.array([label not in task.ignore_labels for label in task.labels])
        return micro_f1_stats(label_matrix([e.labels for e in examples], task.labels),
                              label_matrix(predictions, task.labels), kept)

    def submission(self, prediction: Any, task: Task) -> str:
        chosen = set(prediction)
        return str([int(label in chosen) for label in task.labels])  # FETA: a 0/1 vector in label order
