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

from dfwe.errors import BadInput
from dfwe.shapes.base import Preprocessing, TaskShape
from dfwe.shapes.classification import Classification
from dfwe.shapes.multilabel import Multilabel
from dfwe.shapes.multiple_choice import MultipleChoice
from dfwe.shapes.span import Span

SHAPES: dict[str, TaskShape] = {shape.name: shape for shape in (Classification(), Multilabel(), Span(),
                                                                 MultipleChoice())}


def get_shape(name: str) -> TaskShape:
    """The registered shape called ``name``."""
    try:
        return SHAPES[name]
    except KeyError:
        raise BadInput(f"task shape '{name}' is unknown (use {', '.join(SHAPES)})") from None


__all__ = ["Preprocessing", "SHAPES", "TaskShape", "get_shape"]
