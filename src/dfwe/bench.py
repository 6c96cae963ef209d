"""The benchmark: the whole method and every baseline, once per seed, with spreads and paired differences.

``out/seeds/<seed>/`` holds each seed's complete run (results, report, merged model); ``out/results.json``
holds every seed's methods, a summary (mean and sample standard deviation over seeds), dfwe's paired
differences against every method pooled over seeds, and the mean loss-barrier table. Experts, ingredients
and logits are shared through ``cache``, so benchmarks at several k, or of several search settings, reuse
them, and an interrupted benchmark resumes where it stopped.

``run_suite`` runs every task of a suite (FETA-Friends) as the target in turn, the others as its sources.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from dfwe.config import RunConfig, config_from_dict, config_to_dict
from dfwe.data.tasks import Task
from dfwe.errors import BadInput
from dfwe.eval.stats import MetricStats, pooled_difference
from dfwe.io import atomic_write_json, atomic_write_text, claim_output_dir
from dfwe.pipeline import RunOutput, run_pipeline
from dfwe.report.results import BEST_SINGLE, with_best_single
from dfwe.report.write import barrier_table, metric_name
from dfwe.shapes import get_shape
from dfwe.train.target import BASE_FT

SPLITS = ("dev", "validation", "test")
PER_SEED_KEYS = ("methods", "paired", "barriers", "search", "ingredients", "dev_choices", "timing_seconds")


def summarise(per_seed: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Mean and sample standard deviation (ddof=1; 0 for one seed) of every method's metrics on every split."""
    methods = sorted({m for seed in per_seed.values() for m in seed["methods"]})
    summary: dict[str, Any] = {}
    for method in methods:
        present = [seed["methods"][method] for seed in per_seed.values() if method in seed["methods"]]
        summary[method] = {}
        for split in [s for s in SPLITS if s in present[0]]:
            summary[method][split] = {}
            for metric in present[0][split]:
                values = np.array([entry[split][metric] for entry in present])
                spread = float(values.std(ddof=1)) if len(values) > 1 else 0.0
                summary[method][split][metric] = {"mean": float(values.mean()), "std": spread, "n": len(values)}
    return summary


def compared_stats(output: RunOutput, split: str) -> dict[str, MetricStats]:
    """A run's per-example statistics on ``split`` for every method, ``best-expert-ft`` included."""
    stats = getattr(output.scores, f"{split}_stats")
    return with_best_single(stats, output.results["methods"][BEST_SINGLE]["selected"])


def pooled_paired(outputs: Sequence[RunOutput], resamples: int, seed: int) -> dict[str, dict[str, dict]]:
    """dfwe minus every other method, per seed and pooled over seeds (same test examples every seed)."""
    paired: dict[str, dict[str, dict]] = {}
    for split in ("test", "validation"):
        stats = [compared_stats(o, split) for o in outputs]
        if not resamples or not all(stats):
            continue
        paired[split] = {other: pooled_difference([(s["dfwe"], s[other]) for s in stats], resamples, seed)
                         for other in stats[0] if other != "dfwe"}
    return paired


def mean_barriers(per_seed: Mapping[str, Mapping[str, Any]]) -> list[dict]:
    """The barrier table averaged over seeds (pairs in the order of the first seed)."""
    tables = [seed["barriers"] for seed in per_seed.values() if seed.get("barriers")]
    if not tables:
        return []
    rows = []
    for index, first in enumerate(tables[0]):
        row: dict = {"a": first["a"], "b": first["b"]}
        for metric in first:
            if metric in ("a", "b"):
                continue
            row[metric] = {part: float(np.mean([t[index][metric][part] for t in tables])) for part in first[metric]}
        rows.append(row)
    return rows


def summary_table(summary: Mapping[str, Any], metric: str) -> str:
    """Markdown: mean ± std over seeds of the headline metric on each split, and the other test metrics."""
    any_entry = next(iter(summary.values()))
    splits = [s for s in SPLITS if s in any_entry]
    others = [m for m in any_entry["test"] if m not in (metric, "loss", "calibrated_loss")]
    name = metric_name(metric)
    lines = ["| method | " + " | ".join(f"{s} {name}" for s in splits) + " | "
             + " | ".join(f"test {metric_name(m)}" for m in others) + " |",
             "| --- |" + " ---: |" * (len(splits) + len(others))]
    for method, entry in sorted(summary.items(), key=lambda kv: -kv[1]["test"][metric]["mean"]):
        cells = [entry[s][metric] for s in splits] + [entry["test"][m] for m in others]
        lines.append(f"| {method} | " + " | ".join(f"{c['mean']:.3f} ± {c['std']:.3f}" for c in cells) + " |")
    return "\n".join(lines)


def pooled_table(paired: Mapping[str, Mapping[str, dict]], metric: str) -> str:
    """Markdown: dfwe minus each method, per-seed differences, their mean ± std, the pooled paired interval."""
    name = metric_name(metric)
    lines = [f"| dfwe − method | per-seed {name} differences | mean ± std | pooled paired 95% CI | verdict |",
             "| --- | --- | ---: | --- | --- |"]
    for other, diffs in sorted(paired.items(), key=lambda kv: -kv[1][metric]["mean"]):
        entry = diffs[metric]
        per = ", ".join(f"{d:+.3f}" for d in entry["per_seed"])
        lines.append(f"| dfwe − {other} | {per} | {entry['mean']:+.3f} ± {entry['std']:.3f} | "
                     f"[{entry['ci'][0]:+.3f}, {entry['ci'][1]:+.3f}] | {entry['verdict']} |")
    return "\n".join(lines)


def plot_summary(summary: Mapping[str, Any], metric: str, path: Path, title: str) -> None:
    names = sorted(summary, key=lambda n: summary[n]["test"][metric]["mean"])
    means = [summary[n]["test"][metric]["mean"] for n in names]
    stds = [summary[n]["test"][metric]["std"] for n in names]
    fig = Figure(figsize=(7, 0.45 * len(names) + 1.2), layout="tight")
    ax = fig.subplots()
    ax.barh(names, means, xerr=stds, capsize=3, color=["tab:red" if n == "dfwe" else "tab:gray" for n in names])
    ax.set_xlabel(f"test {metric_name(metric)} (mean ± std over seeds)")
    ax.set_title(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def bench_seeds(config: RunConfig, seeds: Sequence[int], out_dir: Path, cache: Path
                ) -> tuple[dict[str, Any], list[RunOutput]]:
    """Run ``config`` once per seed into ``out_dir/seeds/<seed>`` (resuming what is there) and summarise."""
    outputs = [run_pipeline(config.model_copy(update={"seed": seed}), out_dir / "seeds" / str(seed), resume=True,
                            cache=cache) for seed in seeds]
    per_seed = {str(seed): {key: o.results[key] for key in PER_SEED_KEYS} for seed, o in zip(seeds, outputs)}
    results = {"config": config_to_dict(config), "task": outputs[0].results["task"], "seeds": per_seed,
               "summary": summarise(per_seed), "paired": pooled_paired(outputs, config.eval.bootstrap, seeds[0]),
               "barriers": mean_barriers(per_seed)}
    return results, outputs


def write_bench_report(out_dir: Path, results: Mapping[str, Any], title: str, held_out: str) -> None:
    metric = results["task"]["metric"]
    plot_summary(results["summary"], metric, out_dir / "plots" / "test_scores.png", title)
    body = [f"# dfwe benchmark: {title}", "",
            f"Mean ± sample std over {len(results['seeds'])} seed(s); the `test` column is the official {held_out} "
            "split; every choice was made on few-sample dev data.", "",
            summary_table(results["summary"], metric), "", "![test scores](plots/test_scores.png)", ""]
    if results["paired"].get("test"):
        body += ["## dfwe against each method, paired over the same test examples", "",
                 "Per-seed differences, their mean ± std, and a paired bootstrap interval of the seed-mean difference "
                 "(the same resampled test examples for every seed); \"beats\"/\"loses\" only where it excludes 0.", "",
                 pooled_table(results["paired"]["test"], metric), ""]
    if results["barriers"]:
        body += ["## Loss barriers between ingredients (dev, mean over seeds)", "",
                 barrier_table(results["barriers"], metric), ""]
    atomic_write_text(out_dir / "report.md", "\n".join(body))


def run_bench(config: RunConfig, seeds: list[int], out_dir: Path, resume: bool = False, overwrite: bool = False,
              cache: Path | None = None) -> dict[str, Any]:
    """Run ``config`` once per seed (seed replaced) and summarise; returns what ``results.json`` holds."""
    claim_output_dir(out_dir, {**config_to_dict(config), "bench_seeds": seeds}, resume, overwrite)
    results, _ = bench_seeds(config, seeds, out_dir, cache or out_dir / "cache")
    atomic_write_json(out_dir / "results.json", results)
    shots = f"k = {config.data.shots}" if config.data.sampling == "per_class" else "dialogue fraction"
    write_bench_report(out_dir, results, f"{config.data.target}, {shots}, seeds {', '.join(map(str, seeds))}",
                       config.eval.split)
    return results


def suite_tasks(suite: Path) -> list[str]:
    """The task folders of a suite (those holding a train split), sorted."""
    if not suite.is_dir():
        raise BadInput(f"--suite {suite}: folder not found")
    tasks = sorted(p.name for p in suite.iterdir() if p.is_dir() and any(p.glob("train.jsonl*")))
    if len(tasks) < 2:
        raise BadInput(f"--suite {suite}: needs at least two task folders (each with a train split)")
    return tasks


def transfer_deltas(outputs: Sequence[RunOutput], resamples: int, seed: int) -> dict[str, dict]:
    """Every method minus ``base-ft`` (FETA's transfer delta) on the headline metric: per seed, mean ± std, and a
    pooled paired interval over the shared test examples."""
    metric = outputs[0].results["task"]["metric"]
    stats = [compared_stats(o, "test") for o in outputs]
    return {method: pooled_difference([(s[method], s[BASE_FT]) for s in stats], max(resamples, 1), seed)[metric]
            for method in stats[0] if method != BASE_FT}


def average_over_targets(targets: Mapping[str, Mapping[str, Any]], seeds: Sequence[int]) -> dict[str, Any]:
    """Per method: the headline score and the transfer delta averaged over targets, then mean ± std over seeds."""
    methods = set.intersection(*(set(t["seeds"][str(seeds[0])]["methods"]) for t in targets.values()))
    average: dict[str, Any] = {}
    for method in sorted(methods):
        scores, deltas = [], []
        for seed in map(str, seeds):
            per_target = [(t["seeds"][seed]["methods"][method]["test"][t["task"]["metric"]],
                           t["seeds"][seed]["methods"][BASE_FT]["test"][t["task"]["metric"]]) for t in targets.values()]
            scores.append(np.mean([s for s, _ in per_target]))
            deltas.append(np.mean([s - b for s, b in per_target]))
        average[method] = {name: {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0,
                                  "per_seed": [float(x) for x in v]}
                           for name, v in (("score", scores), ("transfer_delta", deltas))}
    return average


def write_submission(out_dir: Path, target: str, outputs: Sequence[RunOutput], seeds: Sequence[int]) -> None:
    """FETA's Codalab layout, one folder per seed: ``<task>/baseline_predictions.csv`` (base-ft) and
    ``<task>/predictions.csv`` (dfwe), no header, one ``instance id,prediction`` line per test example."""
    task = Task.described(outputs[0].results["task"] | {"task": target}, out_dir)
    shape = get_shape(task.shape)
    for seed, output in zip(seeds, outputs):
        folder = out_dir / "submission" / f"seed-{seed}" / target
        for file, method in (("baseline_predictions.csv", BASE_FT), ("predictions.csv", "dfwe")):
            buffer = io.StringIO()
            writer = csv.writer(buffer, lineterminator="\n")
            for example_id, prediction in zip(output.scores.test_ids, output.scores.test_predictions[method]):
                writer.writerow([example_id, shape.submission(prediction, task)])
            atomic_write_text(folder / file, buffer.getvalue())


def suite_table(targets: Mapping[str, Mapping[str, Any]], average: Mapping[str, Any], methods: Sequence[str]) -> str:
    """Markdown: per target its headline metric, FETA's baseline score (base-ft) and every method's transfer score
    and delta (mean over seeds), then the average over targets."""
    lines = ["| target (metric) | base-ft | " + " | ".join(f"{m} (Δ)" for m in methods) + " |",
             "| --- | ---: |" + " ---: |" * len(methods)]
    for name, target in targets.items():
        summary, metric = target["summary"], target["task"]["metric"]
        base = summary[BASE_FT]["test"][metric]["mean"]
        cells = [f"{summary[m]['test'][metric]['mean']:.3f} ({summary[m]['test'][metric]['mean'] - base:+.3f})"
                 for m in methods]
        lines.append(f"| {name} ({metric_name(metric)}) | {base:.3f} | " + " | ".join(cells) + " |")
    cells = [f"{average[m]['score']['mean']:.3f} ({average[m]['transfer_delta']['mean']:+.3f})" for m in methods]
    lines.append(f"| **average** | {average[BASE_FT]['score']['mean']:.3f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_suite(config: RunConfig, suite: Path, seeds: list[int], out_dir: Path, targets: Sequence[str] | None = None,
              sources: Sequence[str] | None = None, resume: bool = False, overwrite: bool = False,
              cache: Path | None = None) -> dict[str, Any]:
    """Every task of ``suite`` as the target in turn (or ``targets``), the others (or ``sources``) its sources.

    Experts are cached by content, so an expert of a task is trained once per seed and reused by every target
    that lists it; an interrupted suite resumes target by target, seed by seed. Writes ``out/targets/<task>/``
    (a ``dfwe bench`` folder each), ``out/submission/`` (FETA's Codalab layout), ``out/results.json`` and
    ``out/report.md``.
    """
    tasks = suite_tasks(suite)
    chosen = list(targets or tasks)
    unknown = [t for t in [*chosen, *(sources or [])] if t not in tasks]
    if unknown:
        raise BadInput(f"--suite {suite}: no task folder '{unknown[0]}' (tasks: {', '.join(tasks)})")
    claim_output_dir(out_dir, {**config_to_dict(config), "suite": str(suite), "bench_seeds": seeds,
                               "targets": chosen, "sources": list(sources or [])}, resume, overwrite)
    cache = cache or out_dir / "cache"
    results: dict[str, Any] = {"config": config_to_dict(config), "suite": str(suite), "targets": {}}
    for target in chosen:
        target_sources = [t for t in (sources or tasks) if t != target]
        raw = config_to_dict(config)
        raw["data"].update(data_dir=str(suite), target=target, sources=target_sources, synthetic=None)
        target_config = config_from_dict(raw, origin=f"suite target {target}")
        folder = out_dir / "targets" / target
        bench, outputs = bench_seeds(target_config, seeds, folder, cache)
        bench["transfer"] = transfer_deltas(outputs, config.eval.bootstrap, seeds[0])
        atomic_write_json(folder / "results.json", bench)
        write_bench_report(folder, bench, f"{target} (suite {suite.name}), seeds {', '.join(map(str, seeds))}",
                           config.eval.split)
        write_submission(out_dir, target_config.data.target, outputs, seeds)
        results["targets"][target] = bench
        results["average"] = average_over_targets(results["targets"], seeds)
        atomic_write_json(out_dir / "results.json", results)  # after every target: a partial suite is readable
    methods = [m for m in ("multitask-ft", "best-expert-ft", "greedy-soup", "logit-ensemble", "uniform-soup", "dfwe")
               if m in results["average"]]
    atomic_write_text(out_dir / "report.md", "\n".join([
        f"# dfwe on the suite {suite.name}: seeds {', '.join(map(str, seeds))}", "",
        "Test headline metric per target (mean over seeds) and, in brackets, the transfer delta against base-ft "
        "(FETA's baseline score: the target fine-tuned alone). Per-target folders hold the paired intervals.", "",
        suite_table(results["targets"], results["average"], methods), ""]))
    return results
