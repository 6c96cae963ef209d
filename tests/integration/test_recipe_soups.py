"""``merge.ingredients: recipe_soup``: the merges weigh each ingredient's average over its recipes' fine-tunes.

Two runs on one cache, a tiny suite, a two-recipe grid and a frozen trunk: ``kept`` and ``recipe_soup``. The single
models (and so the logit ensemble and the best single model) are the same in both; each soup is the exact average
of its two fine-tunes above the trunk and the first's trunk bit for bit, with a mergekit recipe naming them; dfwe's
exported merge is its weights applied to the soups; a rerun trains and writes nothing again.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import friends_rows, write_task
from safetensors.torch import load_file

from dfwe.config import config_from_dict
from dfwe.errors import BadInput
from dfwe.merge.recipes import recipe_soup
from dfwe.modeling import in_trunk
from dfwe.pipeline import run
from dfwe.train.target import Ingredient

LABELS = ["x", "y", "z"]
SINGLES = ("base-ft", "expert-ft:a", "expert-ft:b", "multitask-ft", "logit-ensemble", "best-expert-ft")


def _config(suite: Path, base: Path, ingredients: str):
    return config_from_dict({
        "data": {"data_dir": str(suite), "target": "target", "sources": ["a", "b"], "shots": 3, "dev_shots": 2,
                 "max_length": 24},
        "model": {"base": str(base), "trainable_layers": 1},
        "experts": {"train": {"epochs": 1, "batch_size": 8}},
        "target": {"train": {"epochs": 2, "batch_size": 4}, "grid": [{"lr": 1e-4}, {"lr": 3e-2}]},
        "merge": {"head": "refit", "ingredients": ingredients},
        "search": {"budget": 3}, "eval": {"bootstrap": 0, "barriers": False}, "runtime": {"threads": 1}})


def _tensors(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def test_merges_weigh_recipe_soups_and_the_single_models_stay_the_kept_fine_tunes(tmp_path, tiny_base):
    suite = tmp_path / "suite"
    for name in ("target", "a", "b"):
        write_task(suite / name, {"train": friends_rows(f"{name}tr", LABELS, 10),
                                  "dev": friends_rows(f"{name}dv", LABELS, 3),
                                  "test": friends_rows(f"{name}te", LABELS, 4)})
    cache = tmp_path / "cache"
    kept = run(_config(suite, tiny_base, "kept"), tmp_path / "kept", cache=cache)
    soup = run(_config(suite, tiny_base, "recipe_soup"), tmp_path / "soup", cache=cache)

    for method in SINGLES:
        assert soup["methods"][method]["test"] == kept["methods"][method]["test"], method
    assert soup["dev_choices"]["scores"] == kept["dev_choices"]["scores"]
    assert soup["cache_keys"]["ingredients"] == kept["cache_keys"]["ingredients"]
    assert "merged_ingredients" not in kept["cache_keys"]

    soups = soup["cache_keys"]["merged_ingredients"]
    assert list(soups) == soup["ingredients"]
    folders = {name: next((cache / "ingredients").glob(f"{name.replace(':', '_')}-soup-{key}"))
               for name, key in soups.items()}
    for name, folder in folders.items():
        recipe = yaml.safe_load((folder / "mergekit.yaml").read_text())
        grid = [(folder / model["model"]).resolve() for model in recipe["models"]]
        assert len(grid) == 2 and kept["cache_keys"]["ingredients"][name] in {g.name.rsplit("-", 1)[1] for g in grid}
        for model in recipe["models"]:
            assert {entry["value"] for entry in model["parameters"]["weight"] if "filter" in entry} == {0.5}
        averaged, first, second = _tensors(folder), _tensors(grid[0]), _tensors(grid[1])
        for tensor, value in averaged.items():
            if in_trunk(tensor, 1) or not value.is_floating_point():
                assert torch.equal(value, first[tensor]), tensor
            else:
                torch.testing.assert_close(value, (first[tensor] + second[tensor]) / 2, rtol=0, atol=1e-6)

    # dfwe's exported merge is its weights applied to the soups (the head is refit, so only the body is compared)
    weights = np.asarray(soup["methods"]["dfwe"]["weights"])[0]
    merged = _tensors(tmp_path / "soup" / "merged")
    body = [n for n, v in merged.items() if v.is_floating_point() and not in_trunk(n, 1) and not n.startswith("head.")]
    assert body
    for tensor in body:
        expected = sum(float(w) * _tensors(folders[name])[tensor] for w, name in zip(weights, soups))
        torch.testing.assert_close(merged[tensor], expected, rtol=0, atol=1e-5)

    # a rerun reads every soup back: nothing is written again
    written = {p: p.stat().st_mtime_ns for f in folders.values() for p in f.iterdir()}
    run(_config(suite, tiny_base, "recipe_soup"), tmp_path / "again", cache=cache)
    assert {p: p.stat().st_mtime_ns for f in folders.values() for p in f.iterdir()} == written


def test_an_ingredient_without_its_recipes_fine_tunes_is_refused(tmp_path):
    whole = Ingredient("base-ft", tmp_path / "base-ft-k", "k", {"lr": 1e-3})
    with pytest.raises(BadInput, match="base-ft .*cached whole by an earlier version.*fresh cache"):
        recipe_soup(whole, tmp_path)
    single = Ingredient("base-ft", tmp_path / "base-ft-k", "k", {"lr": 1e-3})
    single = Ingredient(single.name, single.folder, single.key, single.recipe, (single,))
    assert recipe_soup(single, tmp_path) is single
    assert not list(tmp_path.iterdir())  # a one-recipe ingredient writes no soup
