"""The target stage: every expert, and the pretrained model itself, fine-tuned on the few-sample target.

These *ingredients* are also the single-model baselines (``base-ft``, ``multitask-ft``, ``expert-ft:<source>``),
so each gets the same care: it tries every recipe of ``target.grid`` (learning rate, epochs, probe or not)
and keeps the one whose kept epoch scores best on the few-sample dev set, by the same rule for all.

Heads (``target.head``): every ingredient must end with a head that means the same thing as the others',
or their average is meaningless.

* ``shared``: a probe (logistic regression on frozen features, see :func:`dfwe.forward.fit_head`) is fitted
  *once*, on the pretrained model's features of the few-sample train set, and every ingredient starts from it
  (grid entries without the probe start from one shared seeded random head instead). With
  ``freeze_head`` the bodies learn to feed that one head.
* ``own``: each ingredient starts from the shared random head and, with ``linear_probe``, fits its own probe
  on its own features (LP-FT). The probe's objective is convex, so its start is forgotten: heads differ.

The pretrained body with the shared starting head is saved too (``origin``): it is the common point that task
arithmetic measures task vectors from. Everything is cached under content keys (:mod:`dfwe.cache`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, Mapping

import torch
from pydantic import ValidationError, field_validator, model_validator

from dfwe.cache import content_key, write_key
from dfwe.checkpoints import new_model, save_model
from dfwe.data.encode import Preprocessing
from dfwe.data.sets import ExampleSet
from dfwe.forward import fit_head
from dfwe.io import atomic_dir
from dfwe.schema import Frozen
from dfwe.stats import LOWER_IS_BETTER
from dfwe.train.base import BaseModel, TaskPooling, pooling_for
from dfwe.train.experts import MULTITASK, TRAIN_LOG, Expert
from dfwe.train.loop import TrainConfig, TrainResult, fine_tune

BASE_FT = "base-ft"
MULTITASK_FT = "multitask-ft"
ORIGIN = "origin"


class TargetConfig(Frozen):
    """The few-sample fine-tune every ingredient gets (see :mod:`dfwe.train.target`)."""

    train: TrainConfig = TrainConfig(lr=5e-5, epochs=15, batch_size=16)
    # Overrides of `train`, one recipe each: every ingredient (and so every single-model baseline) tries all
    # and keeps the one whose kept epoch is best on dev by train.select_metric. None: `train` alone.
    grid: list[dict[str, Any]] | None = None
    # "shared": one probe fitted on the pretrained model's features starts every ingredient;
    # "own": each ingredient fits its own probe (with train.linear_probe), so heads differ between them.
    head: Literal["shared", "own"] = "own"
    include_base: bool = True
    # How the target's head reads the body: "base" (the base's own pooling) or one of dfwe.modeling.POOLINGS,
    # for every target or per target ({default: base, relation_extraction: first_segment}); the base's
    # normalisation is kept. Experts have their own setting (experts.pooling), so a source's expert is the same
    # for every target.
    pooling: TaskPooling | dict[str, TaskPooling] = "base"

    def pooling_of(self, task: str, base: tuple[str, bool]) -> tuple[str, bool]:
        """``(pooling, normalize)`` of ``task``'s ingredients, given the base's own."""
        return pooling_for(self.pooling, task, base)

    @field_validator("grid")
    @classmethod
    def _grid_recipes(cls, grid: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        for entry in grid or []:
            unknown = sorted(set(entry) - set(TrainConfig.model_fields))
            if unknown:
                raise ValueError(f"grid entry {entry}: '{unknown[0]}' is not a training setting")
        return grid

    @model_validator(mode="after")
    def _grid_entries_valid(self) -> "TargetConfig":
        for index, entry in enumerate(self.grid or []):
            try:
                TrainConfig.model_validate({**self.train.model_dump(), **entry})
            except ValidationError as error:
                first = error.errors()[0]
                raise ValueError(f"grid entry {index} ({entry}): {'.'.join(map(str, first['loc']))}: "
                                 f"{first['msg']}") from None
        return self


def ingredient_name(expert: str) -> str:
    """The method name of an expert after target fine-tuning."""
    return MULTITASK_FT if expert == MULTITASK else f"expert-ft:{expert}"


def folder_name(ingredient: str) -> str:
    return ingredient.replace(":", "_")


@dataclass(frozen=True)
class Ingredient:
    """One target fine-tuned model: its method name, folder, content key and the recipe it chose on dev, and the
    fine-tune of every recipe it tried, in the grid's order (empty for a grid cached whole by an earlier version)."""

    name: str
    folder: Path
    key: str
    recipe: dict[str, Any]
    tried: tuple["Ingredient", ...] = ()


@dataclass(frozen=True)
class Ingredients:
    """The target fine-tuned models in a fixed order, and the common origin they started from."""

    items: tuple[Ingredient, ...]
    origin: Path

    @property
    def names(self) -> list[str]:
        return [i.name for i in self.items]

    @property
    def folders(self) -> list[Path]:
        return [i.folder for i in self.items]

    @property
    def keys(self) -> list[str]:
        return [i.key for i in self.items]


def recipes(config: TargetConfig) -> list[TrainConfig]:
    """The recipes every ingredient tries: ``train`` with each ``grid`` entry's overrides (or ``train`` alone)."""
    return [config.train.model_copy(update=entry) for entry in (config.grid or [{}])]


def _origin(config: TargetConfig, base: BaseModel, train: ExampleSet, seed: int, cache_dir: Path,
            prep: Preprocessing) -> tuple[Path, str, dict[str, dict[str, torch.Tensor]]]:
    """The origin folder, its key, and the starting heads: ``random`` (seeded) and, for ``shared``, ``probe``."""
    task = train.task
    pooling = config.pooling_of(task.name, base.pooling)
    parts = {"base": base.digest, "pooling": list(pooling), "seed": seed, "head": config.head,
             "probe_c": config.train.probe_c, "shape": task.shape, "labels": list(task.labels),
             "train": train.encoded.digest() if config.head == "shared" else None, **train.encoded.trunk_parts()}
    if train.shape.probe_revision:
        parts["probe_revision"] = train.shape.probe_revision
    key = content_key("ingredient", role=ORIGIN, **parts)
    torch.manual_seed(seed)
    model = new_model(base.folder, task.shape, task.labels, pooling)
    heads = {"random": {n: p.detach().clone() for n, p in model.head.named_parameters()}}
    if config.head == "shared":
        fit_head(model, train.shape, train.encoded, config.train.probe_c)
        heads["probe"] = {n: p.detach().clone() for n, p in model.head.named_parameters()}
    folder = cache_dir / f"{ORIGIN}-{key}"
    if not (folder / "config.json").is_file():
        with atomic_dir(folder) as tmp:
            save_model(model, base.tokenizer, tmp, prep, task, {"role": "origin: the pretrained body and the starting head"})
            write_key(tmp, "ingredient", key, role=ORIGIN, **parts)
    return folder, key, heads


def fine_tune_ingredient(name: str, start: Expert | None, config: TargetConfig, base: BaseModel, train: ExampleSet,
                         dev: ExampleSet, heads: Mapping[str, Mapping[str, torch.Tensor]], origin_key: str,
                         seed: int, device: torch.device, cache_dir: Path, prep: Preprocessing) -> Ingredient:
    """Fine-tune one ingredient with every recipe of the grid; keep the one best on dev by
    ``target.train.select_metric`` (the first on a tie).

    Each recipe's fine-tune is cached on its own, so a grid reuses what earlier runs trained with any of its
    recipes: adding a recipe trains only that one. (A grid ingredient cached whole by an earlier version is
    read back as it is.)
    """
    grid = recipes(config)
    runs = [(recipe, _recipe_parts(start, config, [recipe], base, train, dev, origin_key, seed)) for recipe in grid]
    if len(grid) > 1:
        whole = _cached(name, cache_dir, content_key("ingredient", **_recipe_parts(start, config, grid, base, train,
                                                                                  dev, origin_key, seed)))
        if whole is not None:
            return whole
    tried = [_cached(name, cache_dir, content_key("ingredient", **parts))
             or _train_recipe(name, start, recipe, config, base, train, dev, heads, seed, device, cache_dir, prep, parts)
             for recipe, parts in runs]
    if len(tried) == 1:
        return replace(tried[0], tried=(tried[0],))
    metric = config.train.select_metric
    sign = 1 if metric in LOWER_IS_BETTER else -1
    values = [sign * _dev_value(ingredient, metric) for ingredient in tried]
    best = tried[values.index(min(values))]
    entries = [{k: v for k, v in ingredient.recipe.items() if k != "grid"} for ingredient in tried]
    return Ingredient(name, best.folder, best.key, {**entries[tried.index(best)], "grid": entries},
                      tuple(tried))


def _recipe_parts(start: Expert | None, config: TargetConfig, grid: list[TrainConfig], base: BaseModel,
                  train: ExampleSet, dev: ExampleSet, origin_key: str, seed: int) -> dict[str, Any]:
    """What an ingredient trained with ``grid`` (one recipe, or a whole grid as earlier versions cached it)
    is keyed by."""
    return {"base": base.digest, "start": start.key if start else "base", "origin": origin_key, "seed": seed,
            "head": config.head, "recipes": [r.model_dump(mode="json", exclude_defaults=True) for r in grid],
            "train": train.encoded.digest(), "dev": dev.encoded.digest(), **train.encoded.trunk_parts()}


def _cached(name: str, cache_dir: Path, key: str) -> Ingredient | None:
    folder = cache_dir / f"{folder_name(name)}-{key}"
    if not (folder / TRAIN_LOG).is_file():
        return None
    return Ingredient(name, folder, key, json.loads((folder / TRAIN_LOG).read_text())["recipe"])


def _dev_value(ingredient: Ingredient, metric: str) -> float:
    """The ingredient's dev score by ``metric`` at its kept epoch, from its training log."""
    log = json.loads((ingredient.folder / TRAIN_LOG).read_text())
    dev = TrainResult(log["kept_epoch"], log["history"]).dev
    return _selection_value(dev, metric) if dev else float(ingredient.recipe[metric])


def _selection_value(result_dev: Mapping[str, Mapping[str, float]], metric: str) -> float:
    return float(sum(scores[metric] for scores in result_dev.values()) / len(result_dev))


def _train_recipe(name: str, start: Expert | None, recipe: TrainConfig, config: TargetConfig, base: BaseModel,
                  train: ExampleSet, dev: ExampleSet, heads: Mapping[str, Mapping[str, torch.Tensor]], seed: int,
                  device: torch.device, cache_dir: Path, prep: Preprocessing, parts: dict[str, Any]) -> Ingredient:
    """Fine-tune one ingredient with one recipe, keep its best epoch on dev, and cache it under ``parts``."""
    task = train.task
    began = time.perf_counter()
    torch.manual_seed(seed)
    model = new_model(base.folder, task.shape, task.labels, config.pooling_of(task.name, base.pooling),
                      body_from=start.folder if start else None).to(device)
    use_probe = config.head == "shared" and recipe.linear_probe
    model.head.load_state_dict(heads["probe" if use_probe else "random"])
    # shared heads: the shared probe is the start; never refit on this body's features
    run_recipe = recipe.model_copy(update={"linear_probe": False}) if config.head == "shared" else recipe
    result = fine_tune({task.name: model}, {task.name: train}, {task.name: dev}, run_recipe, seed,
                       desc=f"target {name} (lr {recipe.lr:g})")
    metric = config.train.select_metric
    entry = {"recipe": recipe.model_dump(mode="json", exclude_defaults=True), "kept_epoch": result.kept_epoch,
             metric: _selection_value(result.dev, metric)}
    key = content_key("ingredient", **parts)
    folder = cache_dir / f"{folder_name(name)}-{key}"
    with atomic_dir(folder) as tmp:
        save_model(model.cpu(), base.tokenizer, tmp, prep, task, {"ingredient": name})
        write_key(tmp, "ingredient", key, **parts)
        (tmp / TRAIN_LOG).write_text(json.dumps({"recipe": {**entry, "grid": [entry]}, "kept_epoch": result.kept_epoch,
                                                 "history": result.history, "seconds": time.perf_counter() - began}))
    return Ingredient(name, folder, key, {**entry, "grid": [entry]})


def fine_tune_ingredients(config: TargetConfig, base: BaseModel, train: ExampleSet, dev: ExampleSet,
                          experts: Mapping[str, Expert], seed: int, device: torch.device, cache_dir: Path,
                          prep: Preprocessing) -> Ingredients:
    """Fine-tune the pretrained model (if ``include_base``) and every expert on ``train``, choosing on ``dev``.

    Cross-fitting calls this a second time with train and dev swapped.
    """
    origin, origin_key, heads = _origin(config, base, train, seed, cache_dir, prep)
    starts: list[tuple[str, Expert | None]] = [(BASE_FT, None)] if config.include_base else []
    starts += [(ingredient_name(name), expert) for name, expert in experts.items()]
    items = tuple(fine_tune_ingredient(name, start, config, base, train, dev, heads, origin_key, seed, device,
                                       cache_dir, prep) for name, start in starts)
    return Ingredients(items, origin)
