"""The experts stage: one expert per source task, plus a multitask expert over all of them.

Experts are cached by a fingerprint of everything that determines them (base model, source data and
sampling, recipe, seed), so runs that differ only downstream (another k, another search) share them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from dfwe.config import DataConfig, TrainConfig
from dfwe.data.encode import EncodedSet, multitask
from dfwe.data.prepare import PreparedData
from dfwe.io import atomic_dir
from dfwe.models import load_classifier, save_classifier
from dfwe.train.loop import fine_tune

MULTITASK = "multitask"


def expert_fingerprint(data: PreparedData, data_config: DataConfig, recipe: TrainConfig, seed: int) -> str:
    """A short hash of everything an expert depends on."""
    key = {
        "base": str(data.base.resolve()),
        "sources": {n: str(t.path.resolve()) for n, t in data.sources.items()},
        "recipe": recipe.model_dump(mode="json"),
        "seed": seed,
        "max_length": data_config.max_length,
        "context_turns": data_config.context_turns,
        "source_max_examples": data_config.source_max_examples,
        "source_dev_max_examples": data_config.source_dev_max_examples,
        "synthetic": data_config.synthetic.model_dump() if data_config.synthetic else None,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def _train_one(data: PreparedData, labels: list[str], train: EncodedSet, dev: EncodedSet, recipe: TrainConfig,
               seed: int, device: torch.device, folder: Path, desc: str) -> Path:
    if (folder / "dfwe-train.json").is_file():
        return folder
    torch.manual_seed(seed)
    model = load_classifier(data.base, labels).to(device)
    result = fine_tune(model, train, dev, recipe, seed, desc=desc)
    with atomic_dir(folder) as tmp:
        save_classifier(model, data.tokenizer, tmp)
        (tmp / "dfwe-train.json").write_text(json.dumps({"kept_epoch": result.kept_epoch, "history": result.history}))
    return folder


def train_experts(data: PreparedData, data_config: DataConfig, recipe: TrainConfig, include_multitask: bool,
                  seed: int, device: torch.device, cache_dir: Path) -> dict[str, Path]:
    """Train (or reuse from ``cache_dir``) every expert; returns ``{source name or 'multitask': folder}``."""
    tag = expert_fingerprint(data, data_config, recipe, seed)
    experts = {}
    for name, task in data.sources.items():
        experts[name] = _train_one(data, list(task.labels), data.source_train[name], data.source_dev[name], recipe,
                                   seed, device, cache_dir / f"{name}-{tag}", f"expert {name}")
    if include_multitask and len(data.sources) > 1:
        tasks = list(data.sources.values())
        labels = [f"{t.name}:{label}" for t in tasks for label in t.labels]
        counts = [len(t.labels) for t in tasks]
        train = multitask([data.source_train[t.name] for t in tasks], counts)
        dev = multitask([data.source_dev[t.name] for t in tasks], counts)
        experts[MULTITASK] = _train_one(data, labels, train, dev, recipe, seed, device,
                                        cache_dir / f"{MULTITASK}-{tag}", "expert multitask")
    return experts
