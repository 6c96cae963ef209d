"""FETA-Friends across sessions: one small JSON per finished target and seed, and the table assembled from them.

A seed of the suite takes hours, and a later session may run on a machine without this one's caches, so every
finished unit (one target, one seed) is kept as ``<units>/seed-<s>/<target>.json``: that seed's results for the
target (the ``bench`` per-seed schema) and every method's test predictions, from which the per-example
statistics that pool across seeds are rebuilt against the suite's own test files. Asserts nothing.

    python benchmarks/feta_friends.py units --run runs/feta --units benchmarks/results/feta_friends
    python benchmarks/feta_friends.py table --units benchmarks/results/feta_friends \\
        --suite ../shared/data/feta_friends --json benchmarks/results/feta_friends.json
    python benchmarks/feta_friends.py submission --units benchmarks/results/feta_friends \\
        --suite ../shared/data/feta_friends --out runs/feta-submission

``units`` copies every finished seed of a ``dfwe bench --suite`` folder (each seed folder with ``results.json``
and ``predictions.json``) that has no unit yet (``--overwrite`` replaces existing ones); ``table`` writes the
suite's results schema (``targets.<task>`` as ``dfwe bench`` writes it, with ``transfer``, over every seed the
target has finished; ``average`` over the seeds every target has, and ``average_most_seeds`` over the targets
that have the most seeds, over those seeds), plus the average over targets of dfwe's paired difference to every
method, and FETA's challenge score, and prints the tables; ``submission`` writes FETA's Codalab files
(``seed-<s>/<task>/{baseline_predictions,predictions}.csv``) of every unit. Both read one or more unit folders,
a later folder's unit replacing an earlier one's of the same target and seed: a protocol that changes one
target keeps that target's units alone in its own folder (``--units feta_friends_v3 feta_friends_v4``).
``table --like <folders>`` keeps only the targets and seeds those folders hold: a protocol's table beside a partial
one's over the same units.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from dfwe.bench import PER_SEED_KEYS, summarise_seeds  # noqa: E402
from dfwe.data.records import Example, Task  # noqa: E402
from dfwe.data.shapes import get_shape  # noqa: E402
from dfwe.data.tasks import load_task  # noqa: E402
from dfwe.eval.baselines import BEST_SINGLE  # noqa: E402
from dfwe.eval.scores import with_best_single  # noqa: E402
from dfwe.eval.seeds import average_over_targets, transfer_deltas  # noqa: E402
from dfwe.io import atomic_write_json, atomic_write_text  # noqa: E402
from dfwe.report.submission import SUBMISSION_FILES, submission_csv  # noqa: E402
from dfwe.stats import MetricStats, difference_summary, resampled_difference  # noqa: E402
from dfwe.train.target import BASE_FT  # noqa: E402

CHALLENGE_BASELINE_WEIGHT = 0.1  # FETA's Codalab score: transfer delta + 0.1 x the baseline's score


def bad_input(message: str) -> NoReturn:
    """One line on stderr and exit code 2, as the dfwe command gives for bad input; nothing is written."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def collect_units(run: Path, units: Path, overwrite: bool = False) -> list[Path]:
    """Copy every finished (target, seed) of the suite folder ``run`` into ``units``; returns the files written.

    A unit already in ``units`` is kept unless ``overwrite``: an older run folder holding the same target and seed
    must not replace a unit that was committed from a newer run.
    """
    written = []
    for results_file in sorted(run.glob("targets/*/seeds/*/results.json")):
        seed_dir = results_file.parent
        predictions_file = seed_dir / "predictions.json"
        if not predictions_file.is_file():
            print(f"skipped {seed_dir}: no predictions.json (run it again with --resume to write them)",
                  file=sys.stderr)
            continue
        results, saved = json.loads(results_file.read_text()), json.loads(predictions_file.read_text())
        target, seed = seed_dir.parents[1].name, seed_dir.name
        unit = {"target": target, "seed": int(seed), "config": results["config"], "task": results["task"],
                **{key: results[key] for key in PER_SEED_KEYS},
                "search_candidate_seconds": candidate_seconds(seed_dir / "journal.sqlite"),
                # the test split's predictions (the unit schema); the run's validation predictions stay in the run
                "predictions": {key: saved[key] for key in ("ids", "methods")}}
        path = units / f"seed-{seed}" / f"{target}.json"
        if write_unit(path, unit, overwrite, source=seed_dir):
            written.append(path)
    return written


def write_unit(path: Path, unit: dict[str, Any], overwrite: bool, source: Path | str) -> bool:
    """Write ``unit`` to ``path`` as one line (its predictions dominate); returns whether it was written.

    A unit already at ``path`` is kept, with a line on stderr, unless ``overwrite``: committed units are the
    table's record, and a rerun of an older command must not replace them silently.
    """
    if path.is_file() and not overwrite:
        print(f"kept {path}: it exists (pass --overwrite to replace it with {source})", file=sys.stderr)
        return False
    atomic_write_text(path, json.dumps(unit, separators=(",", ":")) + "\n")
    return True


def candidate_seconds(journal: Path) -> list[float] | None:
    """Seconds each search candidate took (merge, head refit, dev pass), from a seed's search journal: the time
    of the run that scored it, also when a resumed run read it back."""
    if not journal.is_file():
        return None
    with sqlite3.connect(f"file:{journal}?mode=ro", uri=True) as db:
        return [row[0] for row in db.execute("SELECT seconds FROM candidates ORDER BY idx")]


def read_units(folders: list[Path]) -> dict[str, dict[int, dict[str, Any]]]:
    """Every unit under the ``folders``: target -> seed -> unit. A later folder's unit replaces an earlier one's of
    the same target and seed (a protocol that changes one target keeps only that target's units in its folder)."""
    found: dict[str, dict[int, dict[str, Any]]] = {}
    for units in folders:
        for path in sorted(units.glob("seed-*/*.json")):
            unit = json.loads(path.read_text())
            found.setdefault(unit["target"], {})[unit["seed"]] = unit
    return found


def held_out_examples(suite: Path, unit: dict[str, Any]) -> tuple[Task, list[Example]]:
    """The target task and its held-out examples, in the order of the unit's predictions."""
    config = unit["config"]
    task = load_task(suite / unit["target"], config["data"]["context_turns"], unit["target"])
    by_id = {e.id: e for e in task.splits[config["eval"]["split"]]}
    missing = [i for i in unit["predictions"]["ids"] if i not in by_id]
    if missing:
        bad_input(f"{unit['target']} seed {unit['seed']}: example '{missing[0]}' is not in {suite} "
                  f"(the units were made from another copy of the suite)")
    return task, [by_id[i] for i in unit["predictions"]["ids"]]


def unit_stats(task: Task, examples: list[Example], unit: dict[str, Any]) -> dict[str, MetricStats]:
    """Every method's per-example statistics, rebuilt from its predictions; ``best-expert-ft`` as chosen on dev."""
    shape = get_shape(task.shape)
    stats = {method: shape.metric_stats(predictions, examples, task)
             for method, predictions in unit["predictions"]["methods"].items()}
    return with_best_single(stats, unit["methods"][BEST_SINGLE]["selected"])


def target_table(suite: Path, seeds: dict[int, dict[str, Any]], chosen: list[int], resamples: int
                 ) -> tuple[dict[str, Any], list[dict[str, MetricStats]]]:
    """One target's results (the ``dfwe bench`` schema with ``transfer``) over the ``chosen`` seeds."""
    units = [seeds[s] for s in chosen]
    task, examples = held_out_examples(suite, units[0])
    stats = [unit_stats(task, examples, unit) for unit in units]
    per_seed = {str(u["seed"]): {key: u[key] for key in PER_SEED_KEYS} for u in units}
    results = summarise_seeds(units[0]["config"], units[0]["task"], per_seed, {"test": stats}, resamples, chosen[0])
    results["transfer"] = transfer_deltas(stats, task.metric, resamples, chosen[0])
    results["dfwe_weights"] = dfwe_weights(units)
    results["gain_over_base_ft"] = gains_over_base_ft(units, task.metric)
    return results, stats


def gains_over_base_ft(units: list[dict[str, Any]], metric: str) -> dict[str, dict[str, dict[str, Any]]]:
    """Each method's headline metric minus ``base-ft``'s on the same seed, per split (dev, validation, test), mean
    over the seeds that scored the split: what the search's dev gain keeps on held-out data."""
    gains: dict[str, dict[str, dict[str, Any]]] = {}
    for method in units[0]["methods"]:
        for split in ("dev", "validation", "test"):
            scored = [u for u in units if split in u["methods"][method]]
            if scored:
                per_seed = [u["methods"][method][split][metric] - u["methods"][BASE_FT][split][metric] for u in scored]
                gains.setdefault(method, {})[split] = {"mean": float(np.mean(per_seed)),
                                                       "seeds": [u["seed"] for u in scored]}
    return gains


def dfwe_weights(units: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """dfwe's weight on each ingredient: averaged over its groups (layers, blocks) per seed, then over seeds."""
    names = units[0]["methods"]["dfwe"]["ingredients"]
    per_seed = [np.asarray(u["methods"]["dfwe"]["weights"], dtype=float).mean(axis=0) for u in units]
    return {name: {"mean": float(np.mean([w[i] for w in per_seed])), "per_seed": [float(w[i]) for w in per_seed]}
            for i, name in enumerate(names)}


def average_differences(stats: dict[str, list[dict[str, MetricStats]]], metrics: dict[str, str], resamples: int,
                        seed: int) -> dict[str, dict]:
    """dfwe minus every method on each target's headline metric, averaged over targets: per seed, and a paired
    interval that resamples each target's examples independently (shared across that target's seeds)."""
    others = sorted(set.intersection(*(set(s[0]) for s in stats.values())) - {"dfwe"})
    result = {}
    for other in others:
        per_seed, draws = [], []
        for index, (target, per_target) in enumerate(sorted(stats.items())):
            diffs, resampled = resampled_difference([(s["dfwe"], s[other]) for s in per_target], resamples,
                                                    seed + index)
            per_seed.append(diffs[metrics[target]])
            draws.append(resampled[metrics[target]])
        result[other] = difference_summary(np.mean(per_seed, axis=0), np.mean(draws, axis=0))
    return result


def challenge_scores(average: dict[str, Any]) -> dict[str, dict]:
    """FETA's challenge score per method, averaged over targets: transfer delta + 0.1 x base-ft's score, per seed,
    from :func:`average_over_targets`' per-seed averages."""
    scores = {}
    for method in ("dfwe", "multitask-ft"):
        per_seed = [delta + CHALLENGE_BASELINE_WEIGHT * base for delta, base in
                    zip(average[method]["transfer_delta"]["per_seed"], average[BASE_FT]["score"]["per_seed"])]
        scores[method] = {"mean": float(np.mean(per_seed)),
                          "std": float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else 0.0, "per_seed": per_seed}
    return scores


def only_like(found: dict[str, dict[int, dict[str, Any]]],
              like: dict[str, dict[int, dict[str, Any]]]) -> dict[str, dict[int, dict[str, Any]]]:
    """The units of ``found`` whose target and seed ``like`` also holds: one protocol's table over the units that
    another, partial one has finished, so that the two compare over the same targets and seeds."""
    kept = {target: {seed: unit for seed, unit in seeds.items() if seed in like.get(target, {})}
            for target, seeds in found.items()}
    return {target: seeds for target, seeds in kept.items() if seeds}


def assemble(units: list[Path], suite: Path, resamples: int, like: list[Path] | None = None) -> dict[str, Any]:
    """The suite's table: each target over every seed it has finished, the averages over targets over the seeds
    that every target has finished; with ``like`` (unit folders), only the targets and seeds that they hold."""
    found = read_units(units)
    where = " ".join(map(str, units))
    if like:
        found = only_like(found, read_units(like))
        where += f" (only the targets and seeds of --like {' '.join(map(str, like))})"
    if not found:
        bad_input(f"{where}: no units (run `units` first)")
    common = sorted(set.intersection(*(set(seeds) for seeds in found.values())))
    if not common:
        bad_input(f"{where}: no seed has finished every target")
    targets, stats, target_stats = {}, {}, {}
    for target, seeds in sorted(found.items()):
        chosen = sorted(seeds)
        targets[target], target_stats[target] = target_table(suite, seeds, chosen, resamples)
        stats[target] = [target_stats[target][chosen.index(s)] for s in common]
    metrics = {t: r["task"]["metric"] for t, r in targets.items()}
    average = average_over_targets(targets, common)
    table = {"suite": str(suite), "seeds": common, "targets": targets, "average": average,
             "average_paired": average_differences(stats, metrics, resamples, common[0]),
             "challenge": challenge_scores(average),
             "units": {t: sorted(seeds) for t, seeds in found.items()}, "unit_folders": [str(u) for u in units],
             **({"like": [str(u) for u in like]} if like else {})}
    most = max((sorted(seeds) for seeds in found.values()), key=len)
    if most != common:  # a partial later seed: also average the targets that have it, over all their seeds
        subset = [t for t, seeds in found.items() if set(most) <= set(seeds)]
        sub_stats = {t: [target_stats[t][sorted(found[t]).index(s)] for s in most] for t in subset}
        sub_average = average_over_targets({t: targets[t] for t in subset}, most)
        table["average_most_seeds"] = {
            "targets": subset, "seeds": most, "average": sub_average,
            "average_paired": average_differences(sub_stats, {t: metrics[t] for t in subset}, resamples, most[0]),
            "challenge": challenge_scores(sub_average)}
    return table


def write_submissions(units: list[Path], suite: Path, out: Path) -> list[Path]:
    """FETA's Codalab files of every unit (base-ft and dfwe), as ``dfwe bench --suite`` writes them."""
    written = []
    for target, seeds in sorted(read_units(units).items()):
        for seed, unit in sorted(seeds.items()):
            task, _ = held_out_examples(suite, unit)
            for file, method in SUBMISSION_FILES:
                path = out / f"seed-{seed}" / target / file
                atomic_write_text(path, submission_csv(unit["predictions"]["ids"],
                                                       unit["predictions"]["methods"][method], task))
                written.append(path)
    return written


def print_tables(table: dict[str, Any]) -> None:
    methods = ["base-ft", "multitask-ft", "best-expert-ft", "uniform-soup", "greedy-soup", "logit-ensemble", "dfwe"]
    print("\ntest, headline metric, mean ± std over the seeds each target has finished\n| target | metric | seeds | "
          + " | ".join(methods) + " |\n| --- | --- | --- |" + " ---: |" * len(methods))
    for target, result in table["targets"].items():
        metric, summary = result["task"]["metric"], result["summary"]
        cells = [f"{summary[m]['test'][metric]['mean']:.3f} ± {summary[m]['test'][metric]['std']:.3f}"
                 for m in methods]
        print(f"| {target} | {metric} | {', '.join(result['seeds'])} | " + " | ".join(cells) + " |")
    print("\ndfwe minus each method, paired (pooled over seeds), per target\n| target | "
          + " | ".join(m for m in methods if m != "dfwe") + " |\n| --- |" + " ---: |" * (len(methods) - 1))
    for target, result in table["targets"].items():
        paired, metric = result["paired"]["test"], result["task"]["metric"]
        cells = [f"{paired[m][metric]['mean']:+.3f} [{paired[m][metric]['ci'][0]:+.3f}, "
                 f"{paired[m][metric]['ci'][1]:+.3f}] {paired[m][metric]['verdict']}" for m in methods if m != "dfwe"]
        print(f"| {target} | " + " | ".join(cells) + " |")
    print_average(table, methods, f"every target, seeds {table['seeds']}")
    if "average_most_seeds" in table:
        most = table["average_most_seeds"]
        print_average(most, methods, f"the {len(most['targets'])} targets with seeds {most['seeds']}")
    print_gains(table)
    print_weights_and_barriers(table)
    print_timing(table)


def print_gains(table: dict[str, Any]) -> None:
    """The dev/held-out gap: what the merges gain over ``base-ft`` on dev, where they were chosen, and on
    validation and test (mean over the seeds that scored each split)."""
    methods = ("uniform-soup", "greedy-soup", "dfwe")
    print("\nminus base-ft on dev / validation / test, mean over seeds\n| target | validation seeds | "
          + " | ".join(methods) + " |\n| --- | --- |" + " ---: |" * len(methods))
    for target, result in table["targets"].items():
        gains = result["gain_over_base_ft"]
        cells = [" / ".join(f"{gains[m][s]['mean']:+.3f}" if s in gains[m] else "-"
                            for s in ("dev", "validation", "test")) for m in methods]
        seeds = gains["dfwe"].get("validation", {}).get("seeds", [])
        print(f"| {target} | {', '.join(map(str, seeds)) or '-'} | " + " | ".join(cells) + " |")


def print_average(table: dict[str, Any], methods: list[str], title: str) -> None:
    """Each method's score and transfer delta averaged over targets, dfwe's pooled paired difference to it, and
    FETA's challenge score."""
    print(f"\naverage over {title}\n| method | score | transfer delta | dfwe minus it |\n| --- | ---: | ---: | ---: |")
    for method in methods:
        entry, paired = table["average"][method], table["average_paired"].get(method)
        diff = (f"{paired['mean']:+.3f} [{paired['ci'][0]:+.3f}, {paired['ci'][1]:+.3f}] {paired['verdict']}"
                if paired else "-")
        print(f"| {method} | {entry['score']['mean']:.3f} ± {entry['score']['std']:.3f} | "
              f"{entry['transfer_delta']['mean']:+.3f} ± {entry['transfer_delta']['std']:.3f} | {diff} |")
    for method, score in table["challenge"].items():
        print(f"challenge score ({method}): {score['mean']:.3f} ± {score['std']:.3f}")


def short_name(ingredient: str) -> str:
    return ingredient.removeprefix("expert-ft:")


def print_weights_and_barriers(table: dict[str, Any]) -> None:
    """Per target: dfwe's mean weight on each ingredient and the loss barrier (search objective) between
    ``base-ft`` and it, mean over seeds."""
    print("\ndfwe's weights (mean over groups and seeds) and the barrier to base-ft on the search objective")
    for target, result in table["targets"].items():
        objective = result["config"]["search"]["objective"]
        barrier = {row["b"]: row[objective]["barrier"] for row in result["barriers"] if row["a"] == BASE_FT}
        cells = [f"{short_name(name)} {w['mean']:.2f}" + (f" (barrier {barrier[name]:+.3f})" if name in barrier
                                                          else "")
                 for name, w in sorted(result["dfwe_weights"].items(), key=lambda item: -item[1]["mean"])]
        print(f"- {target}: " + "; ".join(cells))


def print_timing(table: dict[str, Any]) -> None:
    """Wall seconds per stage, per target and seed."""
    stages = list(dict.fromkeys(stage for result in table["targets"].values()
                                for seed in result["seeds"].values() for stage in seed["timing_seconds"]))
    print("\nwall seconds per stage\n| target | seed | " + " | ".join(stages) + " | total |\n| --- | ---: |"
          + " ---: |" * (len(stages) + 1))
    for target, result in table["targets"].items():
        for seed, per_seed in result["seeds"].items():
            seconds = per_seed["timing_seconds"]
            print(f"| {target} | {seed} | " + " | ".join(f"{seconds.get(s, 0):,.0f}" for s in stages)
                  + f" | {sum(seconds.values()):,.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    units = commands.add_parser("units", help="copy a suite folder's finished targets and seeds as units")
    units.add_argument("--run", type=Path, required=True, help="a `dfwe bench --suite` output folder")
    units.add_argument("--units", type=Path, required=True)
    units.add_argument("--overwrite", action="store_true", help="replace units that already exist")
    table = commands.add_parser("table", help="assemble the suite's table from the units")
    table.add_argument("--units", type=Path, nargs="+", required=True,
                       help="unit folders; a later folder's unit of a target and seed replaces an earlier one's")
    table.add_argument("--suite", type=Path, default=Path("../shared/data/feta_friends"))
    table.add_argument("--json", type=Path, required=True)
    table.add_argument("--bootstrap", type=int, default=1000)
    table.add_argument("--like", type=Path, nargs="+",
                       help="unit folders: keep only the targets and seeds they hold (two protocols on the same units)")
    submission = commands.add_parser("submission", help="write FETA's Codalab files of every unit")
    submission.add_argument("--units", type=Path, nargs="+", required=True)
    submission.add_argument("--suite", type=Path, default=Path("../shared/data/feta_friends"))
    submission.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.command in ("units", "submission"):
        paths = (collect_units(args.run, args.units, args.overwrite) if args.command == "units"
                 else write_submissions(args.units, args.suite, args.out))
        for path in paths:
            print(path)
        return
    result = assemble(args.units, args.suite, args.bootstrap, args.like)
    print_tables(result)
    atomic_write_json(args.json, result)


if __name__ == "__main__":
    main()
