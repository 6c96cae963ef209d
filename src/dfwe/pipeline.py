"""The whole method, top to bottom: data, experts, target fine-tunes, weight space, search, evaluation, report.

Every choice (expert epochs, greedy-soup membership, the best single model, the searched weights) is
made on dev data; the test split is read once, at the end, to report scores.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from dfwe.config import RunConfig, config_to_dict
from dfwe.data.encode import EncodedSet
from dfwe.data.prepare import PreparedData, prepare_data
from dfwe.eval.baselines import best_single, greedy_soup, logit_ensemble, uniform_weights
from dfwe.eval.metrics import bootstrap_intervals, score_logits
from dfwe.eval.predict import cached_logits, predict_logits
from dfwe.io import atomic_write_json, claim_output_dir
from dfwe.merge.export import export_merged, mergekit_config, write_mergekit_yaml
from dfwe.models import resolve_device
from dfwe.report.write import HEADLINE, write_report
from dfwe.search.objective import FoldSpec
from dfwe.search.run import search_weights
from dfwe.train.experts import train_experts
from dfwe.train.target import MULTITASK_FT, fine_tune_ingredients


def run(config: RunConfig, out_dir: Path, resume: bool = False, overwrite: bool = False,
        cache: Path | None = None) -> dict[str, Any]:
    """Run the whole method as ``config`` says and write every artefact into ``out_dir``.

    Inputs are read and checked before ``out_dir`` is touched, so bad input never harms an earlier run.
    ``cache`` (default ``out_dir/work``) holds experts and target fine-tunes under fingerprints of what
    they depend on, so runs that share them (another k, another search) reuse them.
    Returns the results dict that is also written to ``results.json``.
    """
    timing: dict[str, float] = {}
    clock = time.perf_counter()
    work = out_dir / "work"

    def prepare() -> PreparedData:
        return prepare_data(config.data, config.model, config.seed, work, config.eval.split, config.eval.validation,
                            source_seed=config.experts.resolved_seed(config.seed))

    data = prepare() if config.data.synthetic is None else None  # real data: validated before anything is written
    claim_output_dir(out_dir, config_to_dict(config), resume, overwrite)
    data = data or prepare()
    device = resolve_device(config.device)
    timing["data"] = time.perf_counter() - clock

    # ---- experts: one per source task, plus the multitask expert
    clock = time.perf_counter()
    cache = cache or work
    experts = train_experts(data, config.data, config.experts.train, config.experts.multitask,
                            config.experts.resolved_seed(config.seed), device, cache / "experts")
    timing["experts"] = time.perf_counter() - clock

    # ---- target fine-tune of every expert and of the pretrained model, one shared head init
    clock = time.perf_counter()
    ingredients = fine_tune_ingredients(data, experts, config.target.train, config.target.include_base, config.seed,
                                        device, cache / "ingredients")
    swapped = None
    if config.search.crossfit:  # the same recipe on the dev set, to be scored on the train set
        swapped = fine_tune_ingredients(data, experts, config.target.train, config.target.include_base, config.seed,
                                        device, cache / "ingredients", train=data.target_dev, dev=data.target_train)
    timing["target"] = time.perf_counter() - clock

    # ---- the weight space: ingredients stacked once, merged in place into one live model
    clock = time.perf_counter()
    names = list(ingredients.names)
    dev_spec = FoldSpec(tuple(ingredients.folders), data.target_dev, base=ingredients.base_init, device=config.device)
    dev_fold = dev_spec.build()
    space, model = dev_fold.space, dev_fold.model
    specs = [dev_spec]
    if swapped is not None:
        specs.append(FoldSpec(tuple(swapped.folders), data.target_train, base=swapped.base_init, device=config.device))
    folds = [dev_fold, *(spec.build() for spec in specs[1:])]
    batch_size = config.eval.batch_size

    def logits(weights: np.ndarray, split: EncodedSet, method: str = "linear") -> np.ndarray:
        space.apply(method, weights)
        return predict_logits(model, split, batch_size)

    # ---- dev-only choices: each ingredient, the soups, the searched weights
    one_hot = np.eye(len(names))
    dev_logits = [logits(one_hot[i], data.target_dev) for i in range(len(names))]
    dev_gold = data.target_dev.labels.numpy()
    classes = len(data.target.labels)
    dev_scores = [score_logits(lg, dev_gold, classes)[HEADLINE] for lg in dev_logits]
    best = best_single(dev_scores)
    greedy = greedy_soup(dev_scores, lambda w: score_logits(logits(w, data.target_dev), dev_gold, classes)[HEADLINE])
    start = {"uniform": uniform_weights(len(names)), "best": one_hot[best], "greedy": greedy}[config.search.init]
    start = (1 - config.search.init_smoothing) * start + config.search.init_smoothing * uniform_weights(len(names))
    coarse = None
    if config.search.coarse_budget and config.search.granularity != "model":  # stage 1: one weight per ingredient
        coarse_config = config.search.model_copy(update={"granularity": "model", "budget": config.search.coarse_budget,
                                                         "coarse_budget": 0})
        _, coarse = search_weights(folds, coarse_config, config.seed, out_dir / "journal-coarse.sqlite", init=start,
                                   specs=specs)
        start = coarse.best.weights[0]
    fine_config = config.search.model_copy(update={"budget": config.search.budget - config.search.coarse_budget,
                                                   "coarse_budget": 0})
    search_space, search = search_weights(folds, fine_config, config.seed, out_dir / "journal.sqlite", init=start,
                                          anchor=start, specs=specs)
    dfwe_weights = search.best.weights
    timing["search"] = time.perf_counter() - clock

    # ---- scores: every method on dev, on test (read here, once, to report) and optionally on validation
    clock = time.perf_counter()

    def saved_logits(weights: np.ndarray, examples: EncodedSet, method: str = "linear") -> np.ndarray:
        key = {"weights": np.asarray(weights, dtype=np.float64).tolist(), "method": method, "ids": list(examples.ids),
               "max_length": config.data.max_length, "context_turns": config.data.context_turns}
        return cached_logits(ingredients.base_init.parent / "logits", key, lambda: logits(weights, examples, method))

    def method_logits(examples: EncodedSet) -> dict[str, np.ndarray]:
        out = {name: saved_logits(one_hot[i], examples) for i, name in enumerate(names)}
        out["logit-ensemble"] = logit_ensemble([out[name] for name in names])
        out["uniform-soup"] = saved_logits(uniform_weights(len(names)), examples)
        out["greedy-soup"] = saved_logits(greedy, examples)
        out["dfwe"] = logits(dfwe_weights, examples, search_space.method)  # last: the live model stays dfwe's
        return out

    splits = {"dev": data.target_dev, "test": data.target_test}
    if data.target_validation is not None:
        splits["validation"] = data.target_validation
    scored = {split: method_logits(examples) for split, examples in splits.items()}
    described = {name: {"weights": one_hot[i].tolist()} for i, name in enumerate(names)}
    described.update({"logit-ensemble": {}, "uniform-soup": {"weights": uniform_weights(len(names)).tolist()},
                      "greedy-soup": {"weights": greedy.tolist()},
                      "dfwe": {"weights": np.atleast_2d(dfwe_weights).tolist(), "groups": list(space.grouping.labels),
                               "method": search_space.method}})
    test_gold = data.target_test.labels.numpy()
    methods: dict[str, dict[str, Any]] = {}
    for method, extra in described.items():
        methods[method] = {split: score_logits(scored[split][method], examples.labels.numpy(), classes)
                           for split, examples in splits.items()}
        methods[method]["test_ci"] = bootstrap_intervals(test_gold, scored["test"][method].argmax(axis=1), classes,
                                                         config.eval.bootstrap, config.seed)
        methods[method].update(extra, ingredients=names)
    methods["best-expert-ft"] = {**methods[names[best]], "selected": names[best]}
    timing["evaluate"] = time.perf_counter() - clock

    # ---- artefacts: merged model, mergekit recipe, results, report
    export_merged(model, data.tokenizer, out_dir / "merged", dfwe_weights, names, search_space.method,
                  space.grouping.labels)
    base = ingredients.base_init if search_space.method == "task_arithmetic" else None
    write_mergekit_yaml(out_dir / "mergekit.yaml",
                        mergekit_config(space, dfwe_weights, ingredients.folders, search_space.method, base))
    trace = [r.objective for r in (coarse.full if coarse else [])] + [r.objective for r in search.full]
    results = {
        "config": config_to_dict(config),
        "methods": methods,
        "search": {
            "evaluations": search.candidates + (coarse.candidates if coarse else 0),
            "coarse_evaluations": coarse.candidates if coarse else 0,
            "full_evaluations": len(search.full) + (len(coarse.full) if coarse else 0),
            "full_evaluations_saved": search.full_evaluations_saved + (coarse.full_evaluations_saved if coarse else 0),
            "best_objective": search.best.objective,
            "best_weights": np.atleast_2d(dfwe_weights).tolist(),
            "optimizer": search.optimizer,
            "seed": search.seed,
            "objective": config.search.objective,
            "trace": trace,
            "best_so_far": np.minimum.accumulate(trace).tolist(),
        },
        "ingredients": names,
        "few_shot": {"train_ids": list(data.target_train.ids), "dev_ids": list(data.target_dev.ids)},
        "device": str(device),
        "timing_seconds": timing,
    }
    if MULTITASK_FT not in methods:
        results["note"] = "one source task: no separate multitask expert"
    atomic_write_json(out_dir / "results.json", results)
    write_report(out_dir, results)
    return results

