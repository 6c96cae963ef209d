"""The target stage: every expert, and the pretrained model itself, fine-tuned on the few-sample target.

All of them start their target head from one shared, seeded initialisation, so the fine-tuned models stay
comparable in weight space. The pretrained body with that head is saved too (``base-init``): it is the
common origin that task arithmetic measures task vectors from.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from dfwe.config import TrainConfig
from dfwe.data.encode import EncodedSet
from dfwe.data.prepare import PreparedData
from dfwe.io import atomic_dir
from dfwe.models import body_state, load_classifier, make_head_init, model_for_target, save_classifier
from dfwe.train.experts import MULTITASK
from dfwe.train.loop import fine_tune

BASE_FT = "base-ft"
MULTITASK_FT = "multitask-ft"
BASE_INIT = "base-init"


def ingredient_name(expert: str) -> str:
    """The method name of an expert after target fine-tuning."""
    return MULTITASK_FT if expert == MULTITASK else f"expert-ft:{expert}"


def folder_name(ingredient: str) -> str:
    return ingredient.replace(":", "_")


@dataclass(frozen=True)
class Ingredients:
    """Target fine-tuned models, in a fixed order, and the common origin they started from."""

    names: tuple[str, ...]
    folders: tuple[Path, ...]
    base_init: Path

    def folder(self, name: str) -> Path:
        return self.folders[self.names.index(name)]


def ingredients_fingerprint(data: PreparedData, experts: dict[str, Path], recipe: TrainConfig, include_base: bool,
                            seed: int, train: EncodedSet, dev: EncodedSet) -> str:
    """A short hash of everything a set of target fine-tunes depends on (the exact examples included)."""
    key = {"base": str(data.base.resolve()), "experts": {k: str(v.resolve()) for k, v in experts.items()},
           "recipe": recipe.model_dump(mode="json"), "include_base": include_base, "seed": seed,
           "train": hashlib.sha256("\n".join(train.ids).encode()).hexdigest(),
           "dev": hashlib.sha256("\n".join(dev.ids).encode()).hexdigest(),
           "tokens": int(train.input_ids.shape[1]) + 1000 * int(dev.input_ids.shape[1])}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def fine_tune_ingredients(data: PreparedData, experts: dict[str, Path], recipe: TrainConfig, include_base: bool,
                          seed: int, device: torch.device, cache_dir: Path, train: EncodedSet | None = None,
                          dev: EncodedSet | None = None) -> Ingredients:
    """Fine-tune the pretrained model (if ``include_base``) and every expert on the target.

    ``train``/``dev`` default to the few-sample target train and dev sets; cross-fitting passes them swapped.
    Results live in ``cache_dir/<fingerprint>/``; finished ones are reused (resume, and runs that differ only
    in their search).
    """
    train = data.target_train if train is None else train
    dev = data.target_dev if dev is None else dev
    out_dir = cache_dir / ingredients_fingerprint(data, experts, recipe, include_base, seed, train, dev)
    labels = list(data.target.labels)
    head_init = make_head_init(data.base, labels, seed)
    base_init = out_dir / BASE_INIT
    if not (base_init / "config.json").is_file():
        with atomic_dir(base_init) as tmp:
            save_classifier(model_for_target(data.base, labels, body_state(load_classifier(data.base)), head_init),
                            data.tokenizer, tmp)

    starts = ([(BASE_FT, data.base)] if include_base else []) + [(ingredient_name(e), f) for e, f in experts.items()]
    names, folders = [], []
    for name, start in starts:
        folder = out_dir / folder_name(name)
        if not (folder / "dfwe-train.json").is_file():
            model = model_for_target(data.base, labels, body_state(load_classifier(start)), head_init).to(device)
            result = fine_tune(model, train, dev, recipe, seed, desc=f"target {name}")
            with atomic_dir(folder) as tmp:
                save_classifier(model, data.tokenizer, tmp)
                (tmp / "dfwe-train.json").write_text(json.dumps({"kept_epoch": result.kept_epoch,
                                                                 "history": result.history}))
        names.append(name)
        folders.append(folder)
    return Ingredients(names=tuple(names), folders=tuple(folders), base_init=base_init)
