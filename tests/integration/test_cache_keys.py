"""Cached artefacts are keyed by content: edit one label in place and exactly what depends on it is recomputed.

Three runs share one cache: the original data, then one label of source ``a``'s train split edited in place,
then one label of the target's *test* split edited in place. Each artefact folder is named by its content key
and written once, so "reused" means "the same folder, untouched" and "recomputed" means "a new folder".
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import friends_rows, write_task

from dfwe.config import config_from_dict
from dfwe.pipeline import run

LABELS = ["x", "y", "z"]


def _suite(root: Path) -> Path:
    for name in ("target", "a", "b"):
        write_task(root / name, {"train": friends_rows(f"{name}tr", LABELS, 10),
                                 "dev": friends_rows(f"{name}dv", LABELS, 3), "test": friends_rows(f"{name}te", LABELS, 4)})
    return root


def _edit_first_label(path: Path) -> str:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[0]["label"] = next(label for label in LABELS if label != rows[0]["label"])
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows[0]["id"]


def _logits(cache: Path) -> dict[str, float]:
    """Every cached output file and when it was written."""
    return {p.name: p.stat().st_mtime_ns for p in cache.glob("logits/*.npy")}


def _keys(out: Path) -> dict[str, dict[str, str]]:
    return json.loads((out / "results.json").read_text())["cache_keys"]


def _outputs(out: Path) -> int:
    """How many distinct cached outputs a run has per split: its single ingredients and its distinct merges (a
    greedy soup that kept every ingredient is the uniform soup, and shares its outputs)."""
    methods = json.loads((out / "results.json").read_text())["methods"]
    return 4 + len({json.dumps(np.atleast_2d(methods[m]["weights"]).tolist())
                    for m in ("uniform-soup", "greedy-soup", "dfwe")})


def _changed(before: dict[str, str], after: dict[str, str]) -> set[str]:
    return {name for name in before if before[name] != after[name]}


def test_editing_a_label_recomputes_exactly_what_depends_on_it(tmp_path, tiny_base):
    suite = _suite(tmp_path / "suite")
    config = config_from_dict({"data": {"data_dir": str(suite), "target": "target", "sources": ["a", "b"], "shots": 3,
                                        "dev_shots": 2, "max_length": 24},
                               "model": {"base": str(tiny_base)},
                               "experts": {"train": {"epochs": 1, "batch_size": 8}},
                               "target": {"train": {"epochs": 1, "batch_size": 4}},
                               "search": {"budget": 3}, "eval": {"bootstrap": 0, "barriers": False}})
    cache = tmp_path / "cache"
    run(config, tmp_path / "run1", cache=cache)
    keys1, logits1 = _keys(tmp_path / "run1"), _logits(cache)
    assert set(keys1["experts"]) == {"a", "b", "multitask"}
    folders = {p.parent.name: p.stat().st_mtime_ns for p in cache.glob("*/*/dfwe-key.json")}

    _edit_first_label(suite / "a" / "train.jsonl")
    run(config, tmp_path / "run2", cache=cache)
    keys2, logits2 = _keys(tmp_path / "run2"), _logits(cache)
    assert _changed(keys1["experts"], keys2["experts"]) == {"a", "multitask"}  # both read a's train split
    assert _changed(keys1["ingredients"], keys2["ingredients"]) == {"expert-ft:a", "multitask-ft"}
    # reused artefacts are the very folders of run 1, untouched; recomputed ones are new folders
    for name, key in [*keys2["experts"].items(), *keys2["ingredients"].items()]:
        folder = next(cache.glob(f"*/*-{key}"))
        assert (folder.name in folders) == (keys1["experts"].get(name, keys1["ingredients"].get(name)) == key)
    assert all(p.stat().st_mtime_ns == folders[p.parent.name] for p in cache.glob("*/*/dfwe-key.json")
               if p.parent.name in folders)
    # outputs of the two unchanged single ingredients on dev and test are reused; every merge reads all of them
    assert len(logits1) == 2 * _outputs(tmp_path / "run1")  # on dev and test
    assert len(set(logits2) - set(logits1)) == 2 * _outputs(tmp_path / "run2") - 2 * 2
    assert all(logits2[name] == logits1[name] for name in logits1)  # nothing rewritten

    _edit_first_label(suite / "target" / "test.jsonl")
    run(config, tmp_path / "run3", cache=cache)
    keys3, logits3 = _keys(tmp_path / "run3"), _logits(cache)
    assert keys3 == keys2  # the test split is part of no expert's or ingredient's key
    # only outputs on the edited test split: the single ingredients and the merges (the search chose the same weights)
    assert len(set(logits3) - set(logits2)) == _outputs(tmp_path / "run3")
    assert all(logits3[name] == logits2[name] for name in logits2)  # nothing rewritten
    results = [json.loads((tmp_path / r / "results.json").read_text()) for r in ("run2", "run3")]
    assert results[0]["methods"]["dfwe"]["dev"] == results[1]["methods"]["dfwe"]["dev"]
    assert results[0]["methods"]["dfwe"]["weights"] == results[1]["methods"]["dfwe"]["weights"]


def test_runtime_options_enter_no_key_and_a_run_resumes_under_other_ones(tmp_path, tiny_base):
    import sqlite3

    import pytest
    import yaml

    from dfwe.errors import BadInput

    suite = _suite(tmp_path / "suite")
    raw = {"data": {"data_dir": str(suite), "target": "target", "sources": ["a", "b"], "shots": 3, "dev_shots": 2,
                    "max_length": 24},
           "model": {"base": str(tiny_base)}, "experts": {"train": {"epochs": 1, "batch_size": 8}},
           "target": {"train": {"epochs": 1, "batch_size": 4}}, "search": {"budget": 4},
           "eval": {"bootstrap": 0, "barriers": False}, "runtime": {"threads": 1}}
    out, cache = tmp_path / "run", tmp_path / "cache"
    run(config_from_dict(raw), out, cache=cache)
    journal = out / "journal.sqlite"
    with sqlite3.connect(str(journal)) as db:
        scored = db.execute("SELECT idx, x, objective, seconds FROM candidates ORDER BY idx").fetchall()
    before = _keys(out)

    other = {**raw, "runtime": {"threads": 2, "eval_batch_size": 3, "search_batch_size": 5, "device": "cpu"}}
    run(config_from_dict(other), out, resume=True, cache=cache)
    assert _keys(out) == before
    with sqlite3.connect(str(journal)) as db:  # replayed from the journal: nothing scored again
        assert db.execute("SELECT idx, x, objective, seconds FROM candidates ORDER BY idx").fetchall() == scored
    assert yaml.safe_load((out / "config.yaml").read_text())["runtime"]["threads"] == 2  # both saved, as run

    with pytest.raises(BadInput, match=r"differs in search\.budget"):  # the recipe still has to match
        run(config_from_dict({**other, "search": {"budget": 5}}), out, resume=True, cache=cache)


def _base_ft(suite: Path, cache: Path, base_folder: Path, target: dict):
    """The config and the ``base-ft`` ingredient of a run on ``suite`` with these ``target`` settings."""
    import torch

    from dfwe.pipeline import prepare_inputs
    from dfwe.train.target import fine_tune_ingredients

    config = config_from_dict({"data": {"data_dir": str(suite), "target": "target", "sources": ["a"], "shots": 3,
                                        "dev_shots": 2, "max_length": 24},
                               "model": {"base": str(base_folder)},
                               "target": {"train": {"epochs": 2, "batch_size": 4}, **target}})
    base, data, _ = prepare_inputs(config, cache)
    ingredients = fine_tune_ingredients(config.target, base, data.train, data.dev, {}, 0, torch.device("cpu"),
                                        cache / "ingredients", data.prep)
    return config, ingredients.items[0]


def test_a_grid_reuses_each_recipes_fine_tune_and_keeps_the_one_best_on_dev(tmp_path, tiny_base):
    """Each recipe of ``target.grid`` is cached on its own: a grid whose recipes earlier runs trained trains
    nothing and keeps the one whose kept epoch is best on dev; adding a recipe trains only that one."""
    from dfwe.stats import LOWER_IS_BETTER
    from dfwe.train.experts import TRAIN_LOG

    suite = _suite(tmp_path / "suite")
    cache = tmp_path / "cache"

    def base_ft(target: dict):
        return _base_ft(suite, cache, tiny_base, target)

    def trained() -> dict[str, int]:
        return {p.name: p.stat().st_mtime_ns for p in (cache / "ingredients").glob("base-ft-*")}

    singles = [base_ft({"train": {"epochs": 2, "batch_size": 4, "lr": lr}})[1] for lr in (1e-4, 3e-2)]
    before = trained()
    assert len(before) == 2
    config, chosen = base_ft({"grid": [{"lr": 1e-4}, {"lr": 3e-2}]})
    assert trained() == before  # both recipes read back, nothing trained or written
    metric = config.target.train.select_metric
    values = [json.loads((s.folder / TRAIN_LOG).read_text())["recipe"][metric] for s in singles]
    best = singles[int(np.argmin(values) if metric in LOWER_IS_BETTER else np.argmax(values))]
    assert values[0] != values[1] and (chosen.folder, chosen.key) == (best.folder, best.key)
    assert [entry["recipe"]["lr"] for entry in chosen.recipe["grid"]] == [1e-4, 3e-2]
    assert chosen.recipe["recipe"] == best.recipe["recipe"] and chosen.recipe[metric] == best.recipe[metric]

    base_ft({"grid": [{"lr": 1e-4}, {"lr": 3e-2}, {"lr": 1e-2}]})
    new = set(trained()) - set(before)
    assert len(new) == 1 and set(before) <= set(trained())  # only the added recipe trained
    _, single = base_ft({"train": {"epochs": 2, "batch_size": 4, "lr": 1e-2}})
    assert {single.folder.name} == new  # cached under the key a run of that recipe alone has
    assert {p.name for p in (cache / "ingredients").glob("base-ft-*")} == set(before) | new


def test_a_targets_pooling_keys_its_ingredients_and_base_keeps_the_keys_it_had(tmp_path, tiny_base):
    """``target.pooling`` names the pooling of the target's ingredients, per target: another target's entry, or
    ``base``, leaves the ingredient (and its key) as it was; ``first_segment`` for this target trains a new one
    whose saved config reads its pair's first segment."""
    suite = _suite(tmp_path / "suite")
    cache = tmp_path / "cache"
    _, default = _base_ft(suite, cache, tiny_base, {})
    _, same = _base_ft(suite, cache, tiny_base, {"pooling": {"default": "base", "a": "first_segment"}})
    assert (same.folder, same.key) == (default.folder, default.key)
    _, segment = _base_ft(suite, cache, tiny_base, {"pooling": {"target": "first_segment"}})
    assert segment.key != default.key
    saved = {i.key: json.loads((i.folder / "config.json").read_text())["pooling"] for i in (default, segment)}
    assert saved == {default.key: "mean", segment.key: "first_segment"}


def _experts(suite: Path, cache: Path, base_folder: Path, experts: dict) -> dict:
    """The experts (sources ``a`` and ``b``, and the multitask one) of a run on ``suite`` with these settings."""
    import torch

    from dfwe.pipeline import expert_stage, prepare_inputs

    config = config_from_dict({"data": {"data_dir": str(suite), "target": "target", "sources": ["a", "b"],
                                        "shots": 3, "dev_shots": 2, "max_length": 24},
                               "model": {"base": str(base_folder)},
                               "experts": {"train": {"epochs": 1, "batch_size": 4}, **experts}})
    base, data, _ = prepare_inputs(config, cache)
    return expert_stage(config, base, data, torch.device("cpu"), cache)


def test_a_sources_expert_pooling_keys_its_experts_and_base_keeps_the_keys_they_had(tmp_path, tiny_base):
    """``experts.pooling`` names how a source's head reads the body while its expert trains: ``base``, or an
    entry for another task, leaves every expert (and its key) as it was; ``first_segment`` for source ``a`` trains
    a new expert of ``a`` that reads its pair's first segment, and a new multitask expert (one of whose heads is
    ``a``'s), while ``b``'s expert is read back."""
    suite = _suite(tmp_path / "suite")
    cache = tmp_path / "cache"
    default = _experts(suite, cache, tiny_base, {})
    assert set(default) == {"a", "b", "multitask"}
    same = _experts(suite, cache, tiny_base, {"pooling": {"default": "base", "target": "first_segment"}})
    assert {n: e.key for n, e in same.items()} == {n: e.key for n, e in default.items()}
    segment = _experts(suite, cache, tiny_base, {"pooling": {"a": "first_segment"}})
    assert {n for n in default if segment[n].key != default[n].key} == {"a", "multitask"}
    saved = {n: json.loads((e.folder / "config.json").read_text())["pooling"] for n, e in segment.items()}
    assert saved["a"] == "first_segment" and saved["b"] == "mean"


def test_trained_stages_reads_a_finished_run_back_from_its_cache_and_rebuilds_its_dev_fold(tmp_path, tiny_base):
    """What the benchmarks re-score a finished run from: the same ingredients, nothing trained or written, and a
    dev fold whose merges score what the run's did."""
    from dfwe.data.metrics import score
    from dfwe.pipeline import trained_stages

    suite = _suite(tmp_path / "suite")
    config = config_from_dict({"data": {"data_dir": str(suite), "target": "target", "sources": ["a", "b"],
                                        "shots": 3, "dev_shots": 2, "max_length": 24},
                               "model": {"base": str(tiny_base)}, "experts": {"train": {"epochs": 1, "batch_size": 8}},
                               "target": {"train": {"epochs": 1, "batch_size": 4}}, "search": {"budget": 4},
                               "eval": {"bootstrap": 0, "barriers": False}, "runtime": {"threads": 1}})
    out, cache = tmp_path / "run", tmp_path / "cache"
    results = run(config, out, cache=cache)
    written = {p: p.stat().st_mtime_ns for p in cache.rglob("*") if p.is_file()}

    stages = trained_stages(config, cache)
    assert dict(zip(stages.ingredients.names, stages.ingredients.keys)) == results["cache_keys"]["ingredients"]
    fold = stages.dev_fold()
    metric = results["task"]["metric"]
    for method in ("uniform-soup", "dfwe"):
        entry = results["methods"][method]
        fold.merge(entry.get("method", "linear"), np.atleast_2d(entry["weights"]))
        assert score(fold.logits(stages.data.dev), stages.data.dev)[metric] == pytest.approx(entry["dev"][metric],
                                                                                             abs=1e-6)
    assert {p: p.stat().st_mtime_ns for p in cache.rglob("*") if p.is_file()} == written
