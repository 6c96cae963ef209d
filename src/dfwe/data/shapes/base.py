"""What a task shape is: how its records are read, encoded, turned into a loss, decoded and measured.

A shape is one small class; :mod:`dfwe.data.shapes` registers one instance per shape name. Everything else in
dfwe (the training loop, the weight space, the search objective, the baselines, export) works on any shape
through this interface, so adding a shape is adding one module.

Model outputs are held as one float array per set, padded with ``-inf`` where a row is shorter than the
set (span logits over tokens, choice scores over a padded choice axis): averaging such arrays across
models (the logit ensemble) and scaling them (temperature) keep the padding out of every softmax.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Sequence

import numpy as np
import torch

from dfwe.data.encode import Batch, EncodedSet, Preprocessing
from dfwe.data.records import Example, Task
from dfwe.modeling import DfwePreTrainedModel
from dfwe.stats import MetricStats


class TaskShape(ABC):
    """One task shape (see :mod:`dfwe.data.shapes`)."""

    name: ClassVar[str]
    model_class: ClassVar[type[DfwePreTrainedModel]]  # what a model of this shape is built and loaded as
    auto_class: ClassVar[type]  # the transformers Auto class a checkpoint of this shape opens with
    metrics: ClassVar[tuple[str, ...]]  # every metric the shape reports; a task.json names its headline
    pooled: ClassVar[bool] = True  # the head reads pooled features (False: token states)
    # bumped when the shape's linear probe changes what it fits: it enters the cached ingredients' keys (when
    # not 0, so that the caches of shapes whose probe never changed stay valid)
    probe_revision: ClassVar[int] = 0

    @abstractmethod
    def parse(self, record: dict[str, Any], where: str, context_turns: int) -> Example:
        """One JSON record as an :class:`Example`; a malformed record is bad input naming ``where``."""

    def label_space(self, examples: Sequence[Example]) -> tuple[str, ...]:
        """The labels a task without ``task.json`` takes, read off its train split (none for this shape)."""
        return ()

    def check(self, example: Example, labels: tuple[str, ...], where: str) -> None:
        """Refuse a label outside ``labels`` (or any other target the shape cannot take)."""

    def num_outputs(self, task: Task) -> int:
        """Width of the head (labels; 1 for a choice score; 2 for start and end)."""
        return len(task.labels)

    @abstractmethod
    def encode(self, examples: Sequence[Example], tokenizer: Any, task: Task, prep: Preprocessing) -> EncodedSet:
        """Token ids and training targets of ``examples``."""

    @abstractmethod
    def features(self, model: DfwePreTrainedModel, batch: Batch) -> torch.Tensor:
        """What the head reads: pooled features ``[rows, (choices,) H]`` or token states ``[rows, L, H]``."""

    @abstractmethod
    def head_logits(self, model: DfwePreTrainedModel, features: torch.Tensor, batch: Batch) -> torch.Tensor:
        """The head's output on ``features``, one tensor per row (padding at the dtype's minimum)."""

    def logits(self, model: DfwePreTrainedModel, batch: Batch) -> torch.Tensor:
        """The model's output on ``batch`` (what the transformers ``forward`` of its class computes)."""
        return self.head_logits(model, self.features(model, batch), batch)

    @abstractmethod
    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean training loss of a batch (a proper scoring rule: the search objective reuses it)."""

    def sample_labels(self, logits: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Targets drawn from the model's own predictive distribution at ``logits`` (a batch on the CPU), in the
        form :meth:`loss` takes, so that ``loss(logits, sample)`` is the sample's negative log-likelihood (a Fisher is
        an expectation over them). A shape whose loss is a cross-entropy over the last axis (labels, choices, start
        and end tokens) draws one index per softmax there; padding, at the dtype's minimum, is never drawn."""
        probs = torch.softmax(logits.detach().float(), dim=-1)
        drawn = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=generator)
        return drawn.reshape(probs.shape[:-1])

    def probe_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The data term of the linear probe, per example: with ``||W||^2 / (2 C n)`` added it is scikit-learn's
        logistic regression at inverse L2 strength ``C``, divided by ``C n``. A shape that makes one decision per row
        (a softmax over labels, spans or choices) uses its training loss as it is."""
        return self.loss(logits, labels)

    @abstractmethod
    def decode(self, logits: np.ndarray, data: EncodedSet, examples: Sequence[Example], task: Task) -> list[Any]:
        """One prediction per example (label, label set, answer text, chosen choice)."""

    @abstractmethod
    def metric_stats(self, predictions: Sequence[Any], examples: Sequence[Example], task: Task) -> MetricStats:
        """Per-example sufficient statistics of every metric (bootstrap and paired intervals reuse them)."""

    def submission(self, prediction: Any, task: Task) -> str:
        """A prediction as FETA's Codalab CSV writes it."""
        return str(prediction)

    def nll(self, logits: np.ndarray, data: EncodedSet) -> float:
        """Mean loss of a whole set's logits."""
        with torch.no_grad():
            return float(self.loss(torch.as_tensor(logits), data.labels))
