"""Task shapes: one module each, registered here by the name a ``task.json`` gives as its ``type``.

========================  =======================================================  =============================
shape                     examples                                                 head
========================  =======================================================  =============================
``classification``        an utterance in context, or a text pair -> one label     pooled features -> labels
``multilabel``            a text pair -> a set of labels                           pooled features -> one sigmoid
                                                                                   per label
``span``                  a question and a long context -> answer character spans  tokens -> start / end logits
``multiple_choice``       a question, a context and choices -> one choice          (question+choice, context)
                                                                                   pooled -> one score
========================  =======================================================  =============================
"""

from __future__ import annotations

from typing import Literal

from dfwe.data.shapes.base import TaskShape
from dfwe.data.shapes.classification import Classification
from dfwe.data.shapes.multilabel import Multilabel
from dfwe.data.shapes.multiple_choice import MultipleChoice
from dfwe.data.shapes.span import Span
from dfwe.errors import BadInput
from dfwe.stats import LOWER_IS_BETTER

SHAPES: dict[str, TaskShape] = {shape.name: shape for shape in (Classification(), Multilabel(), Span(),
                                                                 MultipleChoice())}
# Every name a dev selection or a search objective may use: the losses every task has, then each shape's metrics.
# A given task accepts the losses and its own shape's metrics (see metrics_of).
METRICS: tuple[str, ...] = (*LOWER_IS_BETTER, *dict.fromkeys(m for shape in SHAPES.values() for m in shape.metrics))
Metric = Literal[METRICS]  # type: ignore[valid-type]


def get_shape(name: str) -> TaskShape:
    """The registered shape called ``name``."""
    try:
        return SHAPES[name]
    except KeyError:
        raise BadInput(f"task shape '{name}' is unknown (use {', '.join(SHAPES)})") from None


def metrics_of(shape: str) -> tuple[str, ...]:
    """What a task of ``shape`` can be selected or searched on: the losses and the shape's own metrics."""
    return (*LOWER_IS_BETTER, *get_shape(shape).metrics)


def check_metric(metric: str, shape: str, setting: str, task: str) -> None:
    """Bad input naming ``setting`` unless ``metric`` is one a task of ``shape`` reports."""
    if metric not in metrics_of(shape):
        raise BadInput(f"{setting}: '{metric}' is not a metric of task '{task}' (a {shape} task: use "
                       f"{', '.join(metrics_of(shape))})")


__all__ = ["METRICS", "Metric", "SHAPES", "TaskShape", "check_metric", "get_shape", "metrics_of"]
