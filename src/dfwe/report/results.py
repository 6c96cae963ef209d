"""The artefacts stage: ``results.json``, ``merged/``, ``mergekit.yaml``, ``report.md`` and plots of one run."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from dfwe.config import RunConfig, config_to_dict
from dfwe.data.prepare import PreparedData
from dfwe.eval.baselines import DevChoices
from dfwe.eval.scores import Scores, paired_against
from dfwe.eval.stats import MetricStats
from dfwe.io import atomic_write_json
from dfwe.merge.export import export_merged, mergekit_config, write_mergekit_yaml
from dfwe.report.write import write_report
from dfwe.search.objective import DevFold
from dfwe.search.run import SearchOutcome
from dfwe.train.experts import Expert
from dfwe.train.target import MULTITASK_FT, Ingredients

BEST_SINGLE = "best-expert-ft"


def describe_methods(config: RunConfig, ingredients: Ingredients, fold: DevFold, choices: DevChoices,
                     search: SearchOutcome, scores: Scores) -> dict[str, dict[str, Any]]:
    """Every method's scores, intervals and what it is made of (weights, recipe, head)."""
    names = ingredients.names
    merged_head = "refit" if config.merge.head == "refit" else "average"
    methods: dict[str, dict[str, Any]] = {}
    for method, splits in scores.metrics.items():
        entry: dict[str, Any] = {**splits, "test_ci": scores.test_ci.get(method, {}), "ingredients": names}
        if method in names:
            item = ingredients.items[names.index(method)]
            entry.update(weights=np.eye(len(names))[names.index(method)].tolist(), head="own", recipe=item.recipe)
        elif method == "uniform-soup":
            entry.update(weights=[1.0 / len(names)] * len(names), head=merged_head)
        elif method == "greedy-soup":
            entry.update(weights=choices.greedy.tolist(), head=merged_head)
        elif method == "dfwe":
            entry.update(weights=search.weights.tolist(), groups=list(fold.space.grouping.labels),
                         method=search.space.method, head=merged_head)
        methods[method] = entry
    methods[BEST_SINGLE] = {**methods[names[choices.best]], "selected": names[choices.best]}
    return methods


def with_best_single(stats: Mapping[str, MetricStats], best: str) -> dict[str, MetricStats]:
    """Per-example statistics with ``best-expert-ft`` added as the ingredient chosen on dev, so that it is
    compared pairwise like every other method (which ingredient it is may change from seed to seed)."""
    return {**stats, BEST_SINGLE: stats[best]} if stats else {}


def write_run_outputs(out_dir: Path, config: RunConfig, data: PreparedData, tokenizer: Any,
                      experts: dict[str, Expert], ingredients: Ingredients, fold: DevFold, choices: DevChoices,
                      search: SearchOutcome, scores: Scores, barriers: list[dict], timing: dict[str, float],
                      device: str) -> dict[str, Any]:
    """Write every artefact of a run into ``out_dir`` and return the ``results.json`` content."""
    task = data.target
    fold.merge(search.space.method, search.weights)  # the live model becomes dfwe's merge (head rule included)
    export_merged(fold.model, tokenizer, out_dir / "merged", search.weights, ingredients.names, search.space.method,
                  fold.space.grouping.labels, data.prep, task)
    base = ingredients.origin if search.space.method == "task_arithmetic" else None
    head_from = out_dir / "merged" if config.merge.head == "refit" else None
    write_mergekit_yaml(out_dir / "mergekit.yaml",
                        mergekit_config(fold.space, search.weights, ingredients.folders, search.space.method, base,
                                        relative_to=out_dir, head_from=head_from))
    best = ingredients.names[choices.best]
    paired = {split: paired_against(with_best_single(stats, best), "dfwe", config.eval.bootstrap, config.seed)
              for split, stats in (("test", scores.test_stats), ("validation", scores.validation_stats)) if stats}
    results: dict[str, Any] = {
        "config": config_to_dict(config),
        "task": {"name": task.name, **task.describe(),
                 "examples": {"train": len(data.train.examples), "dev": len(data.dev.examples),
                              "test": len(data.test.examples),
                              **({"validation": len(data.validation.examples)} if data.validation else {})},
                 "truncated": data.truncation()},
        "methods": describe_methods(config, ingredients, fold, choices, search, scores),
        "paired": paired,
        "barriers": barriers,
        "search": search.summary(config.search.objective),
        "ingredients": ingredients.names,
        # the content keys of the cached artefacts this run used (see dfwe.cache)
        "cache_keys": {"experts": {name: expert.key for name, expert in experts.items()},
                       "ingredients": dict(zip(ingredients.names, ingredients.keys))},
        "dev_choices": {"metric": task.metric, "scores": dict(zip(ingredients.names, choices.scores)),
                        "best": ingredients.names[choices.best], "greedy": choices.greedy.tolist()},
        "few_shot": {"train_ids": [e.id for e in data.train.examples], "dev_ids": [e.id for e in data.dev.examples]},
        "device": device,
        "timing_seconds": timing,
    }
    if MULTITASK_FT not in ingredients.names:
        results["note"] = "one source task: no separate multitask expert"
    atomic_write_json(out_dir / "results.json", results)
    write_report(out_dir, results)
    return results
