"""The experts stage: one expert per source task, plus a multitask expert over all of them.

An expert is the base model fine-tuned on a source task with that task's own head (any task shape). The
multitask expert trains one body with one head per source task, a batch at a time from one task (tasks
drawn in proportion to their size, tempered by ``experts.temperature``). With ``experts.start: multitask``
each single-task expert starts from the multitask expert's body instead of the base (model ratatouille):
the experts then share a starting point that already knows every source, and stay closer in weight space.
With ``experts.multitask_target`` the multitask expert also trains on the target's few-sample train set (and
selects on its few-sample dev set): FETA's multitask/fine-tune, as TLiDB's ``examples/`` runs it. Its tasks are
then taken in name order, so that on a suite every target (whose sources are the other tasks, at the same
reduction) trains, and shares, the same expert.

Experts are cached under a content key (:mod:`dfwe.cache`) of what they were computed from, so every run,
k and target that lists the same sources with the same data and recipe reuses them.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Mapping

import torch
from pydantic import Field
from safetensors.torch import save_file

from dfwe.cache import content_key, write_key
from dfwe.checkpoints import new_model, save_model
from dfwe.data.prepare import TaskSplits
from dfwe.errors import BadInput
from dfwe.io import atomic_dir
from dfwe.schema import Frozen, Seed
from dfwe.train.base import BaseModel, TaskPooling, pooling_for
from dfwe.train.loop import TrainConfig, fine_tune

MULTITASK = "multitask"
TRAIN_LOG = "dfwe-train.json"


class ExpertsConfig(Frozen):
    """Source experts: one per source task, plus one multitask expert over all of them."""

    train: TrainConfig = TrainConfig(lr=5e-5, epochs=2, batch_size=32)
    multitask: bool = True
    # Multitask batches come from one task at a time, tasks drawn with probability ~ size ** (1 / temperature).
    temperature: float = Field(1.0, gt=0)
    # Optimizer steps per multitask epoch (default: as many as one pass over every source's rows takes).
    multitask_steps: int | None = Field(None, ge=1)
    # The multitask expert also trains on the target's few-sample train set (FETA's multitask/fine-tune).
    multitask_target: bool = False
    # Where single-task experts start: the base, or the multitask expert (model ratatouille).
    start: Literal["base", "multitask"] = "base"
    # How each source task's head reads the body while its expert trains (the multitask expert's heads too), as
    # target.pooling does for the target: "base" or one of dfwe.modeling.POOLINGS, for all or per task
    # ({default: base, MELD_emotion_recognition: first_segment}). A task left at "base" keeps its expert's key.
    pooling: TaskPooling | dict[str, TaskPooling] = "base"
    # Seed of the experts and of their source subsamples; None: the run's seed. Fixing it lets runs at
    # several seeds share one set of experts (the expensive stage), varying only the few-sample target.
    seed: Seed | None = None

    def resolved_seed(self, run_seed: int) -> int:
        return run_seed if self.seed is None else self.seed


@dataclass(frozen=True)
class Expert:
    """A trained expert: the source task(s) it knows, where it lives, and its content key."""

    name: str
    folder: Path
    key: str


def _task_poolings(tasks: Mapping[str, TaskSplits], config: ExpertsConfig, base: BaseModel
                   ) -> dict[str, tuple[str, bool]]:
    return {task: pooling_for(config.pooling, task, base.pooling) for task in tasks}


def _expert_key(base: BaseModel, tasks: Mapping[str, TaskSplits], config: ExpertsConfig, seed: int,
                start: Expert | None) -> tuple[str, dict]:
    # only the tasks whose pooling is not the base's enter the key, so that every other expert keeps its key
    own_pooling = {task: list(p) for task, p in _task_poolings(tasks, config, base).items() if p != base.pooling}
    parts = {"base": base.digest, "pooling": list(base.pooling), "seed": seed, "start": start.key if start else None,
             **({"task_pooling": own_pooling} if own_pooling else {}),
             "recipe": config.train.model_dump(mode="json", exclude_defaults=True),
             "temperature": config.temperature if len(tasks) > 1 else None,
             **({"steps": config.multitask_steps} if len(tasks) > 1 and config.multitask_steps else {}),
             # tasks are drawn in this order: the key's own dict is sorted, so it must say the order apart
             **({"order": list(tasks)} if len(tasks) > 1 else {}),
             "tasks": {name: {"shape": s.train.task.shape, "labels": list(s.train.task.labels),
                              "train": s.train.encoded.digest(), "dev": s.dev.encoded.digest(),
                              **({"probe_revision": s.train.shape.probe_revision}
                                 if config.train.linear_probe and s.train.shape.probe_revision else {})}
                       for name, s in tasks.items()},
             **next(iter(tasks.values())).train.encoded.trunk_parts()}
    return content_key("expert", **parts), parts


def train_expert(name: str, tasks: Mapping[str, TaskSplits], base: BaseModel, config: ExpertsConfig, seed: int,
                 device: torch.device, cache_dir: Path, start: Expert | None = None) -> Expert:
    """Train (or reuse from ``cache_dir``) one expert on ``tasks`` (several: one shared body, a head each)."""
    key, parts = _expert_key(base, tasks, config, seed, start)
    folder = cache_dir / f"{name}-{key}"
    if (folder / TRAIN_LOG).is_file():
        return Expert(name, folder, key)
    began = time.perf_counter()
    torch.manual_seed(seed)
    models = {}
    for (task, splits), pooling in zip(tasks.items(), _task_poolings(tasks, config, base).values()):
        models[task] = new_model(base.folder, splits.train.task.shape, splits.train.task.labels, pooling,
                                 body_from=start.folder if start else None).to(device)
        models[task].body = next(iter(models.values())).body  # one body for every task's head
    result = fine_tune(models, {t: s.train for t, s in tasks.items()}, {t: s.dev for t, s in tasks.items()},
                       config.train, seed, config.temperature, desc=f"expert {name}",
                       steps_per_epoch=config.multitask_steps if len(tasks) > 1 else None)
    first = next(iter(tasks))
    with atomic_dir(folder) as tmp:
        save_model(models[first].cpu(), base.tokenizer, tmp, tasks[first].prep, tasks[first].train.task,
                   {"expert": name, "tasks": list(tasks)})
        if len(tasks) > 1:  # every task's head, for whoever wants the multitask expert itself
            save_file({f"{t}.{n}": p.detach().cpu().contiguous() for t, m in models.items()
                       for n, p in m.head.named_parameters()}, str(tmp / "task_heads.safetensors"))
        write_key(tmp, "expert", key, **parts)
        # seconds: what this expert cost to train (read by benchmarks/feta_cost.py; never part of a key)
        (tmp / TRAIN_LOG).write_text(json.dumps({"kept_epoch": result.kept_epoch, "history": result.history,
                                                 "seconds": time.perf_counter() - began}))
    return Expert(name, folder, key)


def train_experts(config: ExpertsConfig, base: BaseModel, sources: Mapping[str, TaskSplits], seed: int,
                  device: torch.device, cache_dir: Path, target: TaskSplits | None = None) -> dict[str, Expert]:
    """Every expert of a run: ``{source name or 'multitask': Expert}`` (the multitask one needs 2+ sources).

    ``target`` (its few-sample train and dev sets) joins the multitask expert's tasks when
    ``config.multitask_target`` is set.
    """
    experts: dict[str, Expert] = {}
    multitask = None
    if config.multitask and len(sources) > 1:
        tasks = dict(sources)
        if config.multitask_target:
            if target is None:
                raise BadInput("experts.multitask_target: true needs the target's few-sample sets")
            tasks = {name: tasks.get(name, target) for name in sorted([*sources, target.train.task.name])}
        multitask = train_expert(MULTITASK, tasks, base, config, seed, device, cache_dir)
    start = multitask if config.start == MULTITASK else None
    if config.start == MULTITASK and multitask is None:
        raise BadInput("experts.start: 'multitask' needs experts.multitask: true and at least two sources")
    for name, splits in sources.items():
        experts[name] = train_expert(name, {name: splits}, base, config, seed, device, cache_dir, start)
    if multitask is not None:
        experts[MULTITASK] = multitask
    return experts
