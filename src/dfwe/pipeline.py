"""The whole method, top to bottom.

suite -> base -> data -> experts -> ingredients -> dev choices -> search -> scores -> artefacts. Each stage is
one function in its own module that takes the typed results of the stages before it. Every choice (kept
epochs, recipes, the best single model, the greedy soup, the searched weights) is made on few-sample dev
data; the held-out split is read once, at the end, to report scores.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection, Iterator, Mapping

import numpy as np
import torch

from dfwe.cache import content_key
from dfwe.config import RunConfig, config_to_dict
from dfwe.data.prepare import PreparedData, TaskSplits, locate_suite, prepare_data
from dfwe.data.sets import ExampleSet
from dfwe.data.shapes import check_metric
from dfwe.data.tasks import task_folders
from dfwe.errors import BadInput
from dfwe.eval.barriers import loss_barriers
from dfwe.eval.baselines import BEST_SINGLE, DevChoices, choose_on_dev, uniform_weights
from dfwe.eval.scores import HELD_OUT, Merge, Scores, rebuilt_scores, score_methods, with_best_single
from dfwe.io import check_output_dir, output_folder, read_json
from dfwe.merge.fold import DevFold, FoldSpec, HeadRefit, MergeConfig
from dfwe.merge.recipes import better_on_dev, recipe_soups
from dfwe.report.results import RunStages, run_results
from dfwe.report.write import read_predictions, write_outputs, write_predictions
from dfwe.runtime import resolve_device, torch_threads
from dfwe.search.run import search_stage
from dfwe.stats import MetricStats
from dfwe.train.base import BaseModel, prepare_base
from dfwe.train.experts import Expert, train_experts
from dfwe.train.target import Ingredients, fine_tune_ingredients, recipes
from dfwe.train.trunk import attach_trunk, trunk_depth


@dataclass(frozen=True)
class RunOutput:
    """What a run returns: the ``results.json`` content and the per-example statistics (for pooling)."""

    results: dict[str, Any]
    scores: Scores

    def compared_stats(self, split: str) -> dict[str, MetricStats]:
        """Per-example statistics of every method on ``split`` (test or validation), ``best-expert-ft`` included."""
        stats = self.scores.test_stats if split == "test" else self.scores.validation_stats
        return with_best_single(stats, self.results["methods"][BEST_SINGLE]["selected"])


class _Timer(dict):
    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        began = time.perf_counter()
        yield
        self[stage] = self.get(stage, 0.0) + time.perf_counter() - began


def run(config: RunConfig, out_dir: Path, resume: bool = False, overwrite: bool = False,
        cache: Path | None = None) -> dict[str, Any]:
    """Run the whole method as ``config`` says and write every artefact into ``out_dir``.

    Inputs are read and checked before ``out_dir`` is touched, so bad input never harms an earlier run. A
    ``resume`` continues an interrupted run from its journal and the cache, and reads a finished one back.
    ``cache`` (default ``out_dir/work``) holds the base, experts, ingredients and logits under content keys,
    so runs that share them (another k, another search, another target) reuse them.
    Returns the results dict that is also written to ``results.json``.
    """
    return run_pipeline(config, out_dir, resume, overwrite, cache).results


def run_pipeline(config: RunConfig, out_dir: Path, resume: bool = False, overwrite: bool = False,
                 cache: Path | None = None) -> RunOutput:
    """:func:`run`, also returning the per-example statistics that a benchmark pools across seeds."""
    with torch_threads(config.runtime.threads):
        return _run_stages(config, out_dir, resume, overwrite, cache)


def _run_stages(config: RunConfig, out_dir: Path, resume: bool, overwrite: bool, cache: Path | None) -> RunOutput:
    check_output_dir(out_dir)
    device = resolve_device(config.runtime.device)
    timing = _Timer()
    inputs = None
    if config.data.synthetic is None:  # real data: read and check every file before any output is touched
        with timing("data"):
            inputs = prepare_inputs(config, cache or out_dir / "work")
    # an --overwrite run is built beside the earlier results and replaces them only once it has succeeded
    with output_folder(out_dir, config_to_dict(config), resume, overwrite) as out:
        cache = cache or out / "work"
        with timing("data"):  # the built-in suite is generated into the cache: inside the output
            base, data, depth = inputs or prepare_inputs(config, cache)
        inputs_key = run_inputs_key(base, data)
        finished = finished_run(out, inputs_key, data) if resume else None
        if finished is not None:  # resuming a run that had finished: read it back, score nothing again
            return finished
        if depth is not None:
            with timing("trunk"):
                data = attach_trunk(data, base, depth, config.model.trunk_dtype, cache, device)
        with timing("experts"):
            experts = expert_stage(config, base, data, device, cache)
        with timing("target"):
            ingredients = ingredient_stage(config, base, data, experts, device, cache)
            swapped = (ingredient_stage(config, base, data, experts, device, cache, swap=True)
                       if config.search.crossfit else None)
            pool = merge_pool(config, ingredients, data.dev, cache, depth)
            swapped_pool = merge_pool(config, swapped, data.train, cache, depth) if swapped is not None else None
        with timing("search"):
            specs = fold_specs(config, data, pool, swapped_pool, depth)
            folds = [spec.build() for spec in specs]
            singles = None if pool is ingredients else single_fold(config, data, ingredients, depth)
            choices = choose_on_dev(folds[0], data.target.metric, singles)
            soups = {"uniform-soup": uniform_weights(len(ingredients.items)), "greedy-soup": choices.greedy}
            search = search_stage(folds, config.search, config.seed, out, search_start(config, choices), specs,
                                  config.runtime, references=soups)
        with timing("evaluate"):
            merges = {**{name: Merge(weights) for name, weights in soups.items()},
                      "dfwe": Merge(search.weights, search.method)}
            splits = {"dev": data.dev, "test": data.test,
                      **({"validation": data.validation} if data.validation else {})}
            scores = score_methods(folds[0], pool.keys, ingredients.names, merges, splits, cache / "logits",
                                   head_rule(config, data), config.runtime.eval_batch_size, config.eval.bootstrap,
                                   config.seed, None if singles is None else (singles, ingredients.keys))
            barriers = loss_barriers(folds[0], ingredients.names, data.target.metric, config.eval.barriers)
        stages = RunStages(data, experts, ingredients, choices, search, scores, barriers, pool)
        results = run_results(config, stages, dict(timing), str(device))
        write_outputs(out, results, folds[0], ingredients.origin if search.method == "task_arithmetic" else None)
        write_predictions(out, scores, inputs_key)
    return RunOutput(results, scores)


def run_inputs_key(base: BaseModel, data: PreparedData) -> str:
    """What a run computes from besides its config: the base's bytes, every example set it trains, chooses or
    scores on (their content digests), and the ids of the held-out examples, in order."""
    sets = {"train": data.train, "dev": data.dev, "test": data.test, "validation": data.validation,
            **{f"{name}.{split}": getattr(splits, split) for name, splits in data.sources.items()
               for split in ("train", "dev")}}
    present = {name: s for name, s in sets.items() if s is not None}
    return content_key("run", base=base.digest, sets={name: s.encoded.digest() for name, s in present.items()},
                       held_out={name: [e.id for e in present[name].examples] for name in HELD_OUT if name in present})


def finished_run(out: Path, inputs_key: str, data: PreparedData) -> RunOutput | None:
    """The output of the run that finished in ``out`` from the same inputs (its config was checked when ``out``
    was claimed), read back from ``results.json`` and ``predictions.json``; None when ``out`` holds none: an
    interrupted run, other inputs, or files from a version that did not key them."""
    saved = read_predictions(out)
    if saved is None or saved[1] != inputs_key or not (out / "results.json").is_file():
        return None
    results = read_json(out / "results.json")
    held_out = {"test": data.test, **({"validation": data.validation} if data.validation is not None else {})}
    return RunOutput(results, rebuilt_scores(results["methods"], saved[0], held_out))


def prepare_inputs(config: RunConfig, cache: Path) -> tuple[BaseModel, PreparedData, int | None]:
    """The base model and the data stage: every task read and checked, the few-sample sets drawn and encoded,
    and every metric the recipe selects or searches on checked against the shapes of the tasks it scores; and the
    depth of the frozen trunk (None: every layer trains)."""
    suite = locate_suite(config.data, cache, config.seed)
    check_task_keys(config, task_folders(suite.folder), suite.folder)
    base = prepare_base(config.model, suite, cache, config.seed, config.data.max_length_of(config.data.target))
    data = prepare_data(config.data, suite, base.tokenizer, config.seed, config.experts.resolved_seed(config.seed),
                        config.eval.split, config.eval.validation)
    target = data.target
    for recipe in recipes(config.target):
        check_metric(recipe.select_metric, target.shape, "target.train.select_metric", target.name)
    for metric in config.search.objective_weights or [config.search.objective]:
        check_metric(metric, target.shape, "search.objective", target.name)
    for name, splits in data.sources.items():
        check_metric(config.experts.train.select_metric, splits.train.task.shape, "experts.train.select_metric", name)
    return base, data, trunk_depth(config.model.trainable_layers, base)


def check_task_keys(config: RunConfig, tasks: Collection[str], folder: Path) -> None:
    """Bad input unless every per-task setting (``{default: ..., <task>: ...}``) names only ``default`` and
    tasks of ``folder``: a misspelt task would otherwise get the default without a word."""
    per_task = {"data.max_length": config.data.max_length, "data.fraction": config.data.fraction,
                "target.pooling": config.target.pooling, "experts.pooling": config.experts.pooling}
    for setting, value in per_task.items():
        unknown = sorted(set(value) - {"default", *tasks}) if isinstance(value, dict) else []
        if unknown:
            raise BadInput(f"{setting}: '{unknown[0]}' names no task folder of {folder} ({', '.join(sorted(tasks))});"
                           " key each value by one of them or by 'default'")


def expert_stage(config: RunConfig, base: BaseModel, data: PreparedData, device: torch.device,
                 cache: Path) -> dict[str, Expert]:
    """Every expert of the run (trained, or read back from ``cache``), the multitask one with the target's
    few-sample sets when the config says so."""
    return train_experts(config.experts, base, data.sources, config.experts.resolved_seed(config.seed), device,
                         cache / "experts", TaskSplits(data.train, data.dev, data.prep))


def ingredient_stage(config: RunConfig, base: BaseModel, data: PreparedData, experts: Mapping[str, Expert],
                     device: torch.device, cache: Path, swap: bool = False) -> Ingredients:
    """The target's ingredients: base and every expert fine-tuned on train and chosen on dev, or with ``swap``
    (cross-fitting) fine-tuned on dev and chosen on train."""
    train, dev = (data.dev, data.train) if swap else (data.train, data.dev)
    return fine_tune_ingredients(config.target, base, train, dev, experts, config.seed, device, cache / "ingredients",
                                 data.prep)


def merge_pool(config: RunConfig, ingredients: Ingredients, dev: ExampleSet, cache: Path,
               depth: int | None) -> Ingredients:
    """What the merges weigh (``merge.ingredients``): the kept fine-tunes themselves, each ingredient's recipe soup
    (:mod:`dfwe.merge.recipes`), or per ingredient whichever of the two is better on ``dev`` (the examples its
    recipe was chosen on)."""
    if config.merge.ingredients == "kept":
        return ingredients
    soups = recipe_soups(ingredients, cache / "ingredients", depth)
    if config.merge.ingredients == "recipe_soup":
        return soups
    both = FoldSpec((*ingredients.folders, *soups.folders), dev, None, config.runtime.device, None, depth)
    return better_on_dev(ingredients, soups, both.build(), config.target.train.select_metric)


def single_fold(config: RunConfig, data: PreparedData, ingredients: Ingredients, depth: int | None) -> DevFold:
    """The kept fine-tunes on dev, for the single-model baselines when the merges weigh other models."""
    return FoldSpec(tuple(ingredients.folders), data.dev, None, config.runtime.device, None, depth).build()


@dataclass(frozen=True)
class TrainedStages:
    """A run's stages up to its ingredients, for tools that re-score a finished run from its cache."""

    config: RunConfig
    data: PreparedData
    depth: int | None
    ingredients: Ingredients
    pool: Ingredients  # what the merges weigh: the ingredients, or their recipe soups

    def dev_fold(self) -> DevFold:
        """The live dev fold the run searched on (the merges' ingredients scored on dev, heads refit as the config
        says)."""
        return fold_specs(self.config, self.data, self.pool, None, self.depth)[0].build()

    def singles(self) -> tuple[DevFold, list[str]] | None:
        """The kept fine-tunes' fold and keys, for scoring the single models, when the merges weigh other models
        (recipe soups); None when :meth:`dev_fold` holds them."""
        if self.pool is self.ingredients:
            return None
        return single_fold(self.config, self.data, self.ingredients, self.depth), self.ingredients.keys


def trained_stages(config: RunConfig, cache: Path) -> TrainedStages:
    """Data, frozen trunk, experts and ingredients of the run ``config`` describes, read back from ``cache``
    (the cache the run used: nothing is retrained; another cache trains what it lacks)."""
    device = resolve_device(config.runtime.device)
    base, data, depth = trunk_inputs(config, cache, device)
    experts = expert_stage(config, base, data, device, cache)
    ingredients = ingredient_stage(config, base, data, experts, device, cache)
    return TrainedStages(config, data, depth, ingredients, merge_pool(config, ingredients, data.dev, cache, depth))


def trunk_inputs(config: RunConfig, cache: Path, device: torch.device) -> tuple[BaseModel, PreparedData, int | None]:
    """:func:`prepare_inputs` with the frozen trunk's states attached to every set (when layers are frozen)."""
    base, data, depth = prepare_inputs(config, cache)
    if depth is not None:
        data = attach_trunk(data, base, depth, config.model.trunk_dtype, cache, device)
    return base, data, depth


def fold_specs(config: RunConfig, data: PreparedData, ingredients: Ingredients, swapped: Ingredients | None,
               depth: int | None = None) -> list[FoldSpec]:
    """The dev folds the search scores on: ingredients trained on train scored on dev and, when cross-fitting,
    ingredients trained on dev scored on train. With ``merge.head: refit`` each refits on its training set; in the
    ``fisher`` space each measures its ingredients' Fishers there too."""
    base = ingredients.origin if config.search.space == "task_arithmetic" else None
    device = config.runtime.device
    fisher = config.search.space == "fisher"  # each ingredient's Fisher, on the examples it was fine-tuned on
    specs = [FoldSpec(tuple(ingredients.folders), data.dev, base, device, head_refit(config, data.train), depth,
                      data.train if fisher else None, config.seed)]
    if swapped is not None:
        specs.append(FoldSpec(tuple(swapped.folders), data.train, swapped.origin if base else None, device,
                              head_refit(config, data.dev), depth, data.dev if fisher else None, config.seed))
    return specs


def head_refit(config: RunConfig, examples: ExampleSet) -> HeadRefit | None:
    """How a merged model's head is refit (``merge.head: refit``): on the fold's training examples, or a seeded
    subset of ``merge.refit_examples`` of them, as ``merge`` says."""
    if config.merge.head != "refit":
        return None
    limit = config.merge.refit_examples
    if limit is not None and limit < len(examples.examples):
        rows = np.random.default_rng([config.seed, 0x4EF1]).choice(len(examples.examples), size=limit, replace=False)
        examples = examples.subset(np.sort(rows))
    return HeadRefit(examples, config.merge.probe_c, config.merge.refit_iterations)


def search_start(config: RunConfig, choices: DevChoices) -> np.ndarray:
    """Where the search starts: uniform, the best single ingredient or the greedy soup, smoothed towards uniform
    so every ingredient stays reachable."""
    count = len(choices.scores)
    start = {"uniform": uniform_weights(count), "best": np.eye(count)[choices.best], "greedy": choices.greedy}
    smoothing = config.search.init_smoothing
    return (1 - smoothing) * start[config.search.init] + smoothing * uniform_weights(count)


def head_rule(config: RunConfig, data: PreparedData) -> dict[str, Any]:
    """What a merged model's head depends on (part of the content key of its cached outputs)."""
    refit = head_refit(config, data.train)
    if refit is None:
        return {"rule": "average"}
    capped = {"max_iter": refit.max_iter} if refit.max_iter != MergeConfig.model_fields["refit_iterations"].default else {}
    return {"rule": "refit", "probe_c": refit.c, "train": refit.train.encoded.digest(), **capped}


__all__ = ["RunOutput", "run", "run_pipeline"]
