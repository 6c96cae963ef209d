"""``dfwe evaluate``: score a saved model folder on a task split, prepared as the model was trained."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from dfwe.checkpoints import load_model, load_tokenizer, model_task
from dfwe.data.metrics import intervals, score
from dfwe.data.sets import ExampleSet
from dfwe.data.shapes import get_shape
from dfwe.data.tasks import load_task
from dfwe.errors import BadInput
from dfwe.forward import predict_logits
from dfwe.runtime import resolve_device


def evaluate_model(model_dir: Path, task_dir: Path, split: str = "test", max_length: int | None = None,
                   context_turns: int | None = None, bootstrap: int = 1000, device: str = "auto",
                   stride: int | None = None) -> dict[str, Any]:
    """Metrics (with 95% bootstrap intervals) of ``model_dir`` on ``task_dir``'s ``split``.

    ``model_dir`` is a folder dfwe wrote or a plain transformers task checkpoint. Inputs are prepared as the
    model's ``dfwe.json`` records (max length, context turns, stride; a plain checkpoint without one:
    :class:`~dfwe.data.encode.Preprocessing`'s defaults); the arguments override it. The task's shape must be
    the model's and its labels among the model's.
    """
    device_type = resolve_device(device)
    trained_on, prep = model_task(model_dir)
    prep = prep.overridden("command line", max_length=max_length, context_turns=context_turns, stride=stride)
    model = load_model(model_dir)
    task = load_task(task_dir, prep.context_turns)
    if task.shape != trained_on.shape:
        raise BadInput(f"{task_dir}: a {task.shape} task, but {model_dir} was trained for {trained_on.shape}")
    unknown = [label for label in task.labels if label not in trained_on.labels]
    if unknown:
        raise BadInput(f"{task_dir}: label '{unknown[0]}' is not one of the model's labels "
                       f"({', '.join(trained_on.labels)}) of {model_dir}")
    # the model's label order indexes its outputs; the task decides the headline metric and ignored labels
    task = replace(task, labels=trained_on.labels) if trained_on.labels else task
    examples = task.splits[split]
    shape = get_shape(task.shape)
    data = ExampleSet(task, examples, shape.encode(examples, load_tokenizer(model_dir), task, prep))
    logits = predict_logits(model.to(device_type), shape, data.encoded)
    return {"model": str(model_dir), "task": str(task_dir), "split": split, "examples": len(examples),
            "metric": task.metric, **score(logits, data),
            "ci95": intervals(logits, data, bootstrap, seed=0)}
