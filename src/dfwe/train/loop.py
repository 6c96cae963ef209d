"""The one fine-tuning loop: source experts (one task or several) and target fine-tunes all go through
:func:`fine_tune`.

AdamW (no decay on biases and norms), linear warm-up then linear decay, gradient clipping, seeded
shuffling, task sampling and dropout, a progress bar, and selection of the epoch with the best score on the
given dev sets (dev only: the loop never sees test data).

Several tasks train one body at once (the multitask expert): every task has its own model object whose
``body`` is the same module, so each batch is one task's and goes through that task's head. Batches are drawn
task by task with probability proportional to ``size ** (1 / temperature)`` (1: proportional to size, large:
uniform over tasks); an epoch is as many steps as one pass over all tasks' rows takes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, Mapping

import numpy as np
import torch
from pydantic import Field, model_validator

from dfwe.data.encode import Batch, train_batches
from dfwe.data.metrics import score
from dfwe.data.sets import ExampleSet
from dfwe.data.shapes import Metric, check_metric
from dfwe.forward import InverseL2, fit_head, predict_logits
from dfwe.modeling import DfwePreTrainedModel
from dfwe.progress import progress_bar
from dfwe.schema import Frozen
from dfwe.stats import LOWER_IS_BETTER


class TrainConfig(Frozen):
    """One fine-tuning recipe; experts and target fine-tunes each get one."""

    lr: float = Field(5e-5, gt=0)
    # Full fine-tuning epochs after the optional linear probe (0 with linear_probe: the probe alone).
    epochs: int = Field(10, ge=0)
    batch_size: int = Field(16, ge=1)
    warmup_ratio: float = Field(0.1, ge=0, le=1)
    weight_decay: float = Field(0.01, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    # "best" keeps the epoch with the best dev score (dev only, never test); "last" keeps the final one.
    select: Literal["best", "last"] = "best"
    select_metric: Metric = "loss"  # any task's loss, or a metric of the task's shape
    patience: int | None = Field(None, ge=1)
    # LP-FT: first fit the classification head alone on frozen features (L2-regularised logistic regression,
    # full batch), then fine-tune everything. Few-sample fine-tuning from a random head distorts the
    # expert's features; a fitted head leaves far less to change.
    linear_probe: bool = False
    probe_c: InverseL2 = 1.0  # inverse L2 strength, as scikit-learn's C
    # Train the body only: the head stays where it started (a probe shared by every ingredient keeps one
    # meaning across them, so their heads stay averageable).
    freeze_head: bool = False

    @model_validator(mode="after")
    def _something_to_train(self) -> "TrainConfig":
        if self.epochs == 0 and not self.linear_probe:
            raise ValueError("epochs: 0 trains nothing; set epochs >= 1 or linear_probe: true")
        return self


@dataclass
class TrainResult:
    """What one fine-tune did: per-epoch history (train loss, dev scores per task) and the epoch it kept."""

    kept_epoch: int
    history: list[dict] = field(default_factory=list)

    @property
    def dev(self) -> dict[str, dict[str, float]] | None:
        """The kept epoch's dev scores, per task."""
        kept = [record for record in self.history if record["epoch"] == self.kept_epoch]
        return kept[0].get("dev") if kept else None


def _unique_parameters(models: Mapping[str, DfwePreTrainedModel]) -> dict[str, torch.nn.Parameter]:
    """Every trainable parameter once (a shared body appears in every task's model)."""
    seen: dict[int, tuple[str, torch.nn.Parameter]] = {}
    for task, model in models.items():
        for name, param in model.named_parameters():
            if param.requires_grad:
                seen.setdefault(id(param), (f"{task}/{name}", param))
    return dict(seen.values())


def _param_groups(params: Mapping[str, torch.nn.Parameter], weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, param in params.items():
        (no_decay if param.ndim < 2 or "norm" in name.lower() else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _is_better(metric: str, new: float, old: float | None) -> bool:
    if old is None:
        return True
    return new < old if metric in LOWER_IS_BETTER else new > old


def dev_scores(models: Mapping[str, DfwePreTrainedModel], dev: Mapping[str, ExampleSet]) -> dict[str, dict]:
    """Every task's dev metrics under its model."""
    return {task: score(predict_logits(models[task], data.shape, data.encoded), data) for task, data in dev.items()}


def fine_tune(models: Mapping[str, DfwePreTrainedModel], train: Mapping[str, ExampleSet],
              dev: Mapping[str, ExampleSet] | None, recipe: TrainConfig, seed: int, temperature: float = 1.0,
              desc: str = "train", steps_per_epoch: int | None = None) -> TrainResult:
    """Fine-tune ``models`` (one per task, sharing a body when several) in place on ``train``.

    With ``recipe.select == 'best'`` the epoch whose mean dev score over tasks is best is kept. An epoch is
    ``steps_per_epoch`` steps (default: one pass over every task's rows).
    """
    for name, data in (dev or {}).items():
        check_metric(recipe.select_metric, data.task.shape, "select_metric", name)
    states = next(iter(train.values())).encoded.states
    if states is not None:  # the trunk's layers are read through its stored output: they must not move
        for model in models.values():
            model.freeze_trunk(states.depth)
    device = next(next(iter(models.values())).parameters()).device
    rng = np.random.default_rng([seed, 0x7A1])
    torch.manual_seed(seed)
    tasks = list(train)
    if recipe.linear_probe:
        for task in tasks:
            fit_head(models[task], train[task].shape, train[task].encoded, recipe.probe_c)
    for model in models.values():
        model.head.requires_grad_(not recipe.freeze_head)
    result = TrainResult(kept_epoch=recipe.epochs)
    if recipe.epochs == 0:
        result.history.append({"epoch": 0, "train_loss": float("nan"), **({"dev": dev_scores(models, dev)} if dev else {})})
        for model in models.values():
            model.eval()
        return result

    params = _unique_parameters(models)
    sizes = np.array([len(train[t].encoded) for t in tasks], dtype=float)
    draw = sizes ** (1.0 / temperature) / (sizes ** (1.0 / temperature)).sum()
    steps_per_epoch = steps_per_epoch or math.ceil(sizes.sum() / recipe.batch_size)
    total_steps = steps_per_epoch * recipe.epochs
    optimizer = torch.optim.AdamW(_param_groups(params, recipe.weight_decay), lr=recipe.lr,
                                  fused=device.type == "cuda")  # one kernel per step on a GPU
    from transformers import get_linear_schedule_with_warmup

    schedule = get_linear_schedule_with_warmup(optimizer, int(recipe.warmup_ratio * total_steps), total_steps)
    queues: dict[str, list[Batch]] = {task: [] for task in tasks}
    best_score, best_state = None, None
    bar = progress_bar(total_steps, desc)
    for epoch in range(1, recipe.epochs + 1):
        for model in models.values():
            model.train()
        losses = []
        for step in range(steps_per_epoch):
            task = tasks[int(rng.choice(len(tasks), p=draw))] if len(tasks) > 1 else tasks[0]
            if not queues[task]:  # a fresh shuffled pass over this task's rows
                queues[task] = train_batches(train[task].encoded, recipe.batch_size, rng)
            batch = queues[task].pop().to(device)
            shape = train[task].shape
            loss = shape.loss(shape.logits(models[task], batch), batch.labels)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(list(params.values()), recipe.max_grad_norm)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{np.mean(losses[-20:]):.3f}")
        record: dict = {"epoch": epoch, "train_loss": float(np.mean(losses))}
        if dev:
            record["dev"] = dev_scores(models, dev)
        result.history.append(record)
        if dev and recipe.select == "best":
            value = float(np.mean([scores[recipe.select_metric] for scores in record["dev"].values()]))
            if _is_better(recipe.select_metric, value, best_score):
                best_score, result.kept_epoch = value, epoch
                best_state = {name: p.detach().clone() for name, p in params.items()}
            elif recipe.patience is not None and epoch - result.kept_epoch >= recipe.patience:
                break
    bar.close()
    if best_state is not None and result.kept_epoch != len(result.history):
        with torch.no_grad():
            for name, param in params.items():
                param.copy_(best_state[name])
    elif recipe.select == "last" or not dev:
        result.kept_epoch = len(result.history)
    for model in models.values():
        model.eval()
        model.head.requires_grad_(True)
    return result
