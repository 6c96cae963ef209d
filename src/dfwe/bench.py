"""The benchmark: the whole method and every baseline, once per seed, with spreads and paired differences.

``out/seeds/<seed>/`` holds each seed's complete run (results, report, merged model); ``out/results.json``
holds every seed's methods, a summary (mean and sample standard deviation over seeds), dfwe's paired
differences against every method pooled over seeds, and the mean loss-barrier table. Experts, ingredients
and logits are shared through ``cache``, so benchmarks at several k, or of several search settings, reuse
them, and an interrupted benchmark resumes where it stopped.

``run_suite`` runs every task of a suite (FETA-Friends) as the target in turn, the others as its sources.
This module only orchestrates: the statistics are :mod:`dfwe.eval.seeds`', the reports :mod:`dfwe.report`'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from dfwe.config import RunConfig, config_from_dict, config_to_dict
from dfwe.data.tasks import load_tasks, task_folders
from dfwe.errors import BadInput
from dfwe.eval.seeds import average_over_targets, mean_barriers, pooled_paired, summarise, transfer_deltas
from dfwe.io import atomic_write_json, output_folder
from dfwe.pipeline import RunOutput, check_task_keys, prepare_inputs, run_pipeline
from dfwe.report.submission import write_submission
from dfwe.report.write import write_bench_report, write_suite_report
from dfwe.runtime import resolve_device
from dfwe.stats import MetricStats

PER_SEED_KEYS = ("methods", "paired", "barriers", "search", "ingredients", "dev_choices", "timing_seconds")


def bench_seeds(config: RunConfig, seeds: Sequence[int], out_dir: Path, cache: Path
                ) -> tuple[dict[str, Any], list[RunOutput]]:
    """Run ``config`` once per seed into ``out_dir/seeds/<seed>`` (resuming what is there) and summarise."""
    outputs = [run_pipeline(config.model_copy(update={"seed": seed}), out_dir / "seeds" / str(seed), resume=True,
                            cache=cache) for seed in seeds]
    per_seed = {str(seed): {key: o.results[key] for key in PER_SEED_KEYS} for seed, o in zip(seeds, outputs)}
    per_split = {split: [o.compared_stats(split) for o in outputs] for split in ("test", "validation")}
    results = summarise_seeds(config_to_dict(config), outputs[0].results["task"], per_seed, per_split,
                              config.eval.bootstrap, seeds[0])
    return results, outputs


def summarise_seeds(config: dict[str, Any], task: dict[str, Any], per_seed: dict[str, Any],
                    per_split: Mapping[str, Sequence[Mapping[str, MetricStats]]], resamples: int, seed: int
                    ) -> dict[str, Any]:
    """A benchmark's ``results.json`` from each seed's results (``PER_SEED_KEYS``) and per-example statistics
    (``per_split[split]``: one ``{method: stats}`` per seed): the summary, pooled paired differences, barriers."""
    return {"config": config, "task": task, "seeds": per_seed, "summary": summarise(per_seed),
            "paired": pooled_paired(per_split, resamples, seed), "barriers": mean_barriers(per_seed)}


def run_bench(config: RunConfig, seeds: list[int], out_dir: Path, resume: bool = False, overwrite: bool = False,
              cache: Path | None = None) -> dict[str, Any]:
    """Run ``config`` once per seed (seed replaced) and summarise; returns what ``results.json`` holds.

    Every seed's inputs are read and checked before ``out_dir`` is touched; an ``overwrite`` benchmark replaces
    the earlier one only when it has finished.
    """
    check_seeds(config, seeds)
    if config.data.synthetic is None:  # every seed reads the same files: read, check and draw from them once
        prepare_inputs(config, cache or out_dir / "cache")
    with output_folder(out_dir, {**config_to_dict(config), "bench_seeds": seeds}, resume, overwrite) as out:
        results, _ = bench_seeds(config, seeds, out, cache or out / "cache")
        atomic_write_json(out / "results.json", results)
        shots = f"k = {config.data.shots}" if config.data.sampling == "per_class" else "dialogue fraction"
        write_bench_report(out, results, f"{config.data.target}, {shots}, seeds {', '.join(map(str, seeds))}",
                           config.eval.split)
    return results


def check_seeds(config: RunConfig, seeds: Sequence[int]) -> None:
    """Bad input unless ``config`` is valid with every seed and its device is there."""
    for seed in seeds:
        config_from_dict({**config_to_dict(config), "seed": seed}, origin=f"--seeds {seed}")
    resolve_device(config.runtime.device)


def suite_tasks(suite: Path) -> list[str]:
    """The task folders of a suite (those holding a train split), sorted."""
    if not suite.is_dir():
        raise BadInput(f"--suite {suite}: folder not found")
    tasks = task_folders(suite)
    if len(tasks) < 2:
        raise BadInput(f"--suite {suite}: needs at least two task folders (each with a train split)")
    return tasks


def run_suite(config: RunConfig, suite: Path, seeds: list[int], out_dir: Path, targets: Sequence[str] | None = None,
              sources: Sequence[str] | None = None, resume: bool = False, overwrite: bool = False,
              cache: Path | None = None) -> dict[str, Any]:
    """Every task of ``suite`` as the target in turn (or ``targets``), the others (or ``sources``) its sources.

    Experts are cached by content, so an expert of a task is trained once per seed and reused by every target
    that lists it; an interrupted suite resumes target by target, seed by seed. Writes ``out/targets/<task>/``
    (a ``dfwe bench`` folder each), ``out/submission/`` (FETA's Codalab layout), ``out/results.json`` and
    ``out/report.md``. Every target's config and every record of every task are checked before ``out_dir`` is
    touched; an ``overwrite`` suite replaces the earlier one only when it has finished.
    """
    tasks = suite_tasks(suite)
    chosen = list(targets or tasks)
    unknown = [t for t in [*chosen, *(sources or [])] if t not in tasks]
    if unknown:
        raise BadInput(f"--suite {suite}: no task folder '{unknown[0]}' (tasks: {', '.join(tasks)})")
    check_task_keys(config, tasks, suite)
    target_configs = {target: suite_target_config(config, suite, target, [t for t in (sources or tasks) if t != target])
                      for target in chosen}
    check_seeds(config, seeds)
    load_tasks(suite, sorted({*chosen, *(sources or tasks)}), config.data.context_turns)
    marker = {**config_to_dict(config), "suite": str(suite), "bench_seeds": seeds, "targets": chosen,
              "sources": list(sources or [])}
    with output_folder(out_dir, marker, resume, overwrite) as out:
        shared = cache or out / "cache"
        results: dict[str, Any] = {"config": config_to_dict(config), "suite": str(suite), "targets": {}}
        for target, target_config in target_configs.items():
            folder = out / "targets" / target
            bench, outputs = bench_seeds(target_config, seeds, folder, shared)
            bench["transfer"] = transfer_deltas([o.compared_stats("test") for o in outputs], bench["task"]["metric"],
                                                config.eval.bootstrap, seeds[0])
            atomic_write_json(folder / "results.json", bench)
            write_bench_report(folder, bench, f"{target} (suite {suite.name}), seeds {', '.join(map(str, seeds))}",
                               config.eval.split)
            write_submission(out, target, bench["task"], [o.scores for o in outputs], seeds)
            results["targets"][target] = bench
            results["average"] = average_over_targets(results["targets"], seeds)
            atomic_write_json(out / "results.json", results)  # after every target: a partial suite is readable
        write_suite_report(out, results, suite.name, seeds)
    return results


def suite_target_config(config: RunConfig, suite: Path, target: str, sources: list[str]) -> RunConfig:
    """``config`` with ``target`` of ``suite`` as its target and ``sources`` as its sources."""
    raw = config_to_dict(config)
    raw["data"].update(data_dir=str(suite), target=target, sources=sources, synthetic=None)
    return config_from_dict(raw, origin=f"suite target {target}")
