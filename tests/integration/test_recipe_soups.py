"""``merge.ingredients``: the merges weigh each ingredient's average over its recipes' fine-tunes, or per
ingredient whichever of that soup and its kept fine-tune is better on dev.

Runs on one cache, a tiny suite, a two-recipe grid and a frozen trunk: ``kept``, ``recipe_soup`` and
``best_on_dev``. The single models (and so the logit ensemble and the best single model) are the same in all; each
soup is the exact average of its two fine-tunes above the trunk and the first's trunk bit for bit, with a mergekit
recipe naming them; dfwe's exported merge is its weights applied to the soups; a rerun writes no soup again.
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
from dfwe.data.encode import EncodedSet
from dfwe.data.records import Example, Task
from dfwe.data.sets import ExampleSet
from dfwe.errors import BadInput
from dfwe.merge.recipes import better_on_dev, recipe_soup
from dfwe.modeling import in_trunk
from dfwe.pipeline import run
from dfwe.train.target import Ingredient, Ingredients

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
    either = run(_config(suite, tiny_base, "best_on_dev"), tmp_path / "again", cache=cache)
    assert {p: p.stat().st_mtime_ns for f in folders.values() for p in f.iterdir()} == written
    # best_on_dev: each ingredient is its kept fine-tune or its soup; the single models are unchanged
    for name, key in either["cache_keys"]["merged_ingredients"].items():
        assert key in (kept["cache_keys"]["ingredients"][name], soups[name])
    for method in SINGLES:
        assert either["methods"][method]["test"] == kept["methods"][method]["test"], method


def test_better_on_dev_keeps_per_ingredient_the_lower_dev_loss_and_the_kept_one_on_a_tie(tmp_path):
    """Three ingredients whose soups are better, worse and exactly as good on dev as their kept fine-tunes."""
    rng = np.random.default_rng(0)
    gold = rng.integers(0, 3, size=30)
    data = _classification_set(gold)
    sharp, blunt = 3.0 * np.eye(3)[gold], 0.5 * np.eye(3)[gold]
    noise = rng.normal(size=(30, 3))
    # rows: kept 0-2, then soups 0-2 (ingredient 0's soup is sharper, 1's blunter, 2's the same model's outputs)
    outputs = [noise + blunt, noise + sharp, noise + blunt, noise + sharp, noise + blunt, noise + blunt]
    fold = _OutputsFold(data, outputs)
    kept = Ingredients(tuple(Ingredient(f"i{i}", tmp_path / f"k{i}", f"k{i}", {}) for i in range(3)), tmp_path)
    soups = Ingredients(tuple(Ingredient(f"i{i}", tmp_path / f"s{i}", f"s{i}", {}) for i in range(3)), tmp_path)
    chosen = better_on_dev(kept, soups, fold, "calibrated_loss")
    assert [i.key for i in chosen.items] == ["s0", "k1", "k2"]
    assert all(not refit for refit in fold.refits)  # each scored as trained, with its own head
    assert better_on_dev(kept, soups, _OutputsFold(data, outputs), "accuracy").items[2].key == "k2"


class _OutputsFold:
    """A stand-in for a live fold whose model, at a one-hot merge, outputs that row's fixed logits."""

    def __init__(self, data, outputs):
        self.data, self.outputs, self.refits, self.row = data, outputs, [], None

    def merge(self, method, weights, refit=True):
        self.refits.append(refit)
        self.row = int(np.argmax(weights))

    def logits(self, data, batch_size=64):
        return self.outputs[self.row]


def _classification_set(gold):
    labels = ("a", "b", "c")
    task = Task(name="t", path=Path("t"), shape="classification", labels=labels, metric="accuracy", splits={})
    examples = tuple(Example(id=str(i), text="x", label=labels[g]) for i, g in enumerate(gold))
    tokens = torch.zeros((len(gold), 1), dtype=torch.long)
    encoded = EncodedSet(ids=tuple(e.id for e in examples), input_ids=tokens, token_type_ids=tokens,
                         lengths=torch.ones(len(gold), dtype=torch.long), labels=torch.tensor(gold), pad_id=0)
    return ExampleSet(task, examples, encoded)


def test_an_ingredient_without_its_recipes_fine_tunes_is_refused(tmp_path):
    whole = Ingredient("base-ft", tmp_path / "base-ft-k", "k", {"lr": 1e-3})
    with pytest.raises(BadInput, match="base-ft .*cached whole by an earlier version.*fresh cache"):
        recipe_soup(whole, tmp_path)
    single = Ingredient("base-ft", tmp_path / "base-ft-k", "k", {"lr": 1e-3})
    single = Ingredient(single.name, single.folder, single.key, single.recipe, (single,))
    assert recipe_soup(single, tmp_path) is single
    assert not list(tmp_path.iterdir())  # a one-recipe ingredient writes no soup
