"""``dfwe evaluate``: score a saved model folder on a task split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dfwe.data.encode import encode
from dfwe.data.tasks import load_task
from dfwe.errors import BadInput
from dfwe.eval.metrics import bootstrap_intervals, score_logits
from dfwe.eval.predict import predict_logits
from dfwe.models import load_classifier, load_tokenizer, resolve_device


def evaluate_model(model_dir: Path, task_dir: Path, split: str = "test", max_length: int = 128,
                   context_turns: int = 3, bootstrap: int = 1000, device: str = "auto") -> dict[str, Any]:
    """Metrics (with 95% bootstrap intervals) of ``model_dir`` on ``task_dir/<split>.jsonl``.

    The model's label names (``config.id2label``) must cover the task's labels.
    """
    task = load_task(task_dir, context_turns)
    model = load_classifier(model_dir).to(resolve_device(device))
    label_index = {str(name): int(i) for i, name in model.config.id2label.items()}
    unknown = [label for label in task.labels if label not in label_index]
    if unknown:
        raise BadInput(f"{task_dir}: label '{unknown[0]}' is not one of the model's labels "
                       f"({', '.join(label_index)}) in {model_dir / 'config.json'}")
    data = encode(task.splits[split], load_tokenizer(model_dir), label_index, max_length)
    logits = predict_logits(model, data)
    gold = data.labels.numpy()
    classes = len(label_index)
    return {"model": str(model_dir), "task": str(task_dir), "split": split, "examples": len(data),
            **score_logits(logits, gold, classes),
            "ci95": bootstrap_intervals(gold, logits.argmax(axis=1), classes, bootstrap, seed=0)}
