"""The target stage: every expert, and the pretrained model itself, fine-tuned on the few-sample target.

All of them start their target head from one shared, seeded initialisation, so the fine-tuned models stay
comparable in weight space. The pretrained body with that head is saved too (``base-init``): it is the
common origin that task arithmetic measures task vectors from.
"""

from __future__ import annotations

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


def fine_tune_ingredients(data: PreparedData, experts: dict[str, Path], recipe: TrainConfig, include_base: bool,
                          seed: int, device: torch.device, out_dir: Path, train: EncodedSet | None = None,
                          dev: EncodedSet | None = None) -> Ingredients:
    """Fine-tune the pretrained model (if ``include_base``) and every expert on the target.

    ``train``/``dev`` default to the few-sample target train and dev sets; cross-fitting passes them swapped.
    Finished ingredients already in ``out_dir`` are reused (resume).
    """
    train = data.target_train if train is None else train
    dev = data.target_dev if dev is None else dev
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
