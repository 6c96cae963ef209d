"""Recipe soups: each ingredient as the average of its fine-tunes over every recipe of ``target.grid``.

Every ingredient tries each recipe of the grid from the same start and keeps one by its dev score; the others are
cached and otherwise unused. Fine-tunes of one start at different learning rates often lie in one basin, and their
average (a model soup across hyperparameters, Wortsman et al. 2022) can be better than either; where one recipe
under-trains it is not (FETA-Friends' character identification: docs/results.md, "Round 10"). With
``merge.ingredients: recipe_soup`` the merges (the soups and dfwe's search) take these averages as their
ingredients; the single-model baselines (``base-ft``, ``multitask-ft``, ...) stay the kept fine-tunes.

Each soup is a model folder in the ingredient cache, keyed by the content keys of the fine-tunes it averages, with
the ``mergekit.yaml`` that rebuilds it from them. Only what trains is averaged; a frozen trunk is the first
fine-tune's (the same, bit for bit, in every one).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from dfwe.cache import content_key, write_key
from dfwe.checkpoints import save_tensors_like
from dfwe.data.metrics import score
from dfwe.errors import BadInput
from dfwe.io import atomic_dir
from dfwe.merge.export import mergekit_config, write_mergekit_yaml
from dfwe.merge.fold import DevFold
from dfwe.merge.space import WeightSpace
from dfwe.stats import LOWER_IS_BETTER
from dfwe.train.experts import TRAIN_LOG
from dfwe.train.target import Ingredient, Ingredients, folder_name


def recipe_soup(ingredient: Ingredient, cache_dir: Path, trunk_depth: int | None = None) -> Ingredient:
    """``ingredient`` as the uniform average of its recipes' fine-tunes (itself when it tried one recipe), written
    to ``cache_dir`` once and read back after."""
    if not ingredient.tried:
        raise BadInput(f"{ingredient.name} ({ingredient.folder}) was cached whole by an earlier version of dfwe, "
                       "without its recipes' fine-tunes: run with a fresh cache (--cache) to average its recipes")
    if len(ingredient.tried) == 1:
        return ingredient
    parts = {"role": "recipe-soup", "fine_tunes": [t.key for t in ingredient.tried], "trunk_depth": trunk_depth}
    key = content_key("ingredient", **parts)
    folder = cache_dir / f"{folder_name(ingredient.name)}-soup-{key}"
    recipe = {"soup": [t.recipe for t in ingredient.tried]}
    if not (folder / TRAIN_LOG).is_file():
        fine_tunes = [t.folder for t in ingredient.tried]
        space = WeightSpace.from_checkpoints(fine_tunes, trunk_depth=trunk_depth)
        space.set_grouping("model")
        weights = np.full((1, len(fine_tunes)), 1.0 / len(fine_tunes))
        space.apply("linear", weights)
        with atomic_dir(folder) as tmp:
            save_tensors_like(fine_tunes[0], space.state_dict(), tmp,
                              {"ingredient": ingredient.name, "recipe_soup": [str(f) for f in fine_tunes]})
            write_mergekit_yaml(tmp / "mergekit.yaml", mergekit_config(space, weights, fine_tunes, "linear",
                                                                        relative_to=folder), "linear")
            write_key(tmp, "ingredient", key, **parts)
            (tmp / TRAIN_LOG).write_text(json.dumps({"recipe": recipe}))
    return Ingredient(ingredient.name, folder, key, recipe, ingredient.tried)


def recipe_soups(ingredients: Ingredients, cache_dir: Path, trunk_depth: int | None = None) -> Ingredients:
    """Every ingredient as its recipe soup (:func:`recipe_soup`), in the same order, from the same origin."""
    return Ingredients(tuple(recipe_soup(i, cache_dir, trunk_depth) for i in ingredients.items), ingredients.origin)


def better_on_dev(kept: Ingredients, soups: Ingredients, fold: DevFold, metric: str) -> Ingredients:
    """Per ingredient, its kept fine-tune or its recipe soup, whichever scores better by ``metric`` on ``fold``'s
    dev data, each with its own head (the kept fine-tune on a tie). ``fold`` holds the kept fine-tunes and then the
    soups, in that order."""
    count = len(kept.items)
    values = []
    for row in range(2 * count):
        fold.merge("linear", np.eye(2 * count)[row], refit=False)
        values.append(score(fold.logits(fold.data), fold.data)[metric])
    sign = 1 if metric in LOWER_IS_BETTER else -1
    chosen = (soup if sign * values[count + i] < sign * values[i] else own
              for i, (own, soup) in enumerate(zip(kept.items, soups.items)))
    return Ingredients(tuple(chosen), kept.origin)


__all__ = ["better_on_dev", "recipe_soup", "recipe_soups"]
