"""The content of ``results.json``: a run's stage results as one plain dict (what every other tool reads)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from dfwe.config import RunConfig, config_to_dict
from dfwe.data.prepare import PreparedData
from dfwe.eval.baselines import BEST_SINGLE, DevChoices
from dfwe.eval.scores import Scores, paired_against, with_best_single
from dfwe.search.run import SearchOutcome
from dfwe.train.experts import Expert
from dfwe.train.target import MULTITASK_FT, Ingredients


@dataclass(frozen=True)
class RunStages:
    """The typed results of a run's stages, in the order the pipeline produces them."""

    data: PreparedData
    experts: dict[str, Expert]
    ingredients: Ingredients
    choices: DevChoices
    search: SearchOutcome
    scores: Scores
    barriers: list[dict]
    pool: Ingredients  # what the merges weigh: the ingredients, or their recipe soups (merge.ingredients)


def describe_methods(config: RunConfig, stages: RunStages) -> dict[str, dict[str, Any]]:
    """Every method's scores, intervals and what it is made of (weights, recipe, head)."""
    ingredients, choices, search, scores = stages.ingredients, stages.choices, stages.search, stages.scores
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
            entry.update(weights=search.weights.tolist(), groups=list(search.groups), method=search.method,
                         head=merged_head)
        methods[method] = entry
    methods[BEST_SINGLE] = {**methods[names[choices.best]], "selected": names[choices.best]}
    return methods


def run_results(config: RunConfig, stages: RunStages, timing: dict[str, float], device: str) -> dict[str, Any]:
    """The ``results.json`` content of a run."""
    data, ingredients, choices, scores = stages.data, stages.ingredients, stages.choices, stages.scores
    task = data.target
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
        "methods": describe_methods(config, stages),
        "paired": paired,
        "barriers": stages.barriers,
        "search": stages.search.summary(config.search.objective),
        "ingredients": ingredients.names,
        # the content keys of the cached artefacts this run used (see dfwe.cache)
        "cache_keys": {"experts": {name: expert.key for name, expert in stages.experts.items()},
                       "ingredients": dict(zip(ingredients.names, ingredients.keys)),
                       **({"merged_ingredients": dict(zip(ingredients.names, stages.pool.keys))}
                          if stages.pool is not ingredients else {})},
        "dev_choices": {"metric": task.metric, "scores": dict(zip(ingredients.names, choices.scores)),
                        "best": best, "greedy": choices.greedy.tolist()},
        "few_shot": {"train_ids": [e.id for e in data.train.examples], "dev_ids": [e.id for e in data.dev.examples]},
        "device": device,
        "timing_seconds": timing,
    }
    if MULTITASK_FT not in ingredients.names:
        results["note"] = "one source task: no separate multitask expert"
    return results
