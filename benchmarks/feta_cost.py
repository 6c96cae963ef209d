"""What one seed of FETA-Friends costs on this machine, stage by stage and target by target: with every layer
training (the default before issue 19) and with the chosen CPU settings. Prints tables, writes JSON; asserts
nothing.

    python benchmarks/feta_cost.py --suite ../shared/data/feta_friends --cache runs/cache \
        --units benchmarks/results/feta_friends_v2 --set model.trainable_layers=1 --set experts.train.lr=5e-4 \
        --json benchmarks/results/feta_cost.json
    # later units landed (another seed): re-read them, keep the timed steps
    python benchmarks/feta_cost.py --cache runs/cache --units benchmarks/results/feta_friends_v2 \
        --json benchmarks/results/feta_cost.json --measured-only

Three measurements, one cost model:

1. *rows*: every set one seed reads (each task's few-sample train and dev sets, read as target and as source,
   and its test split), in rows (windows of a long context, choices of a cloze) and tokens; the distinct rows
   the trunk store holds, and its size on disk in float16 and float32.
2. *steps*: per task, seconds per row of a training pass and of a scoring pass, with every layer and on stored
   trunk states (the top N layers only), and of computing a row's trunk states, measured on that task's own
   rows with all-MiniLM-L6-v2 in this run.
3. *chosen*: the wall time per stage and target of the `dfwe bench --suite` runs at the chosen settings, read
   from their finished units (``--units``, as ``benchmarks/feta_friends.py units`` keeps them): measured.

The cost model counts the passes one seed makes (every expert's epochs over its rows, every ingredient's epochs,
probe, dev passes, each search candidate's dev pass and refit, test scoring) and prices them with the steps
table. `today` is that model with every layer training and one multitask expert per target (not run: it would
take about a day; ``measured: false``); the same model at the chosen settings is printed beside the measured run,
so its error is visible.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from feta_friends import read_units  # noqa: E402

from dfwe.bench import suite_target_config, suite_tasks  # noqa: E402
from dfwe.checkpoints import new_model  # noqa: E402
from dfwe.cli import parse_overrides  # noqa: E402
from dfwe.config import RunConfig, config_to_dict, feta_config_path, load_config  # noqa: E402
from dfwe.data.sets import ExampleSet  # noqa: E402
from dfwe.data.shapes import get_shape  # noqa: E402
from dfwe.forward import predict_logits  # noqa: E402
from dfwe.pipeline import prepare_inputs  # noqa: E402
from dfwe.train.loop import fine_tune  # noqa: E402
from dfwe.train.trunk import TrunkStore, row_keys, trunk_depth, trunk_model  # noqa: E402

HOUR = 3600.0
STAGES = ("trunk", "experts", "multitask experts", "target fine-tunes", "search", "test scoring")


@dataclass(frozen=True)
class TaskSets:
    """The sets of one task that a seed reads: its few-sample train and dev sets and its test split."""

    train: ExampleSet
    dev: ExampleSet
    test: ExampleSet


def rows_of(data: ExampleSet) -> tuple[int, int]:
    """Rows (windows, choices) and tokens of a set."""
    lengths = data.encoded.lengths.numpy()
    return int((lengths > 0).sum()), int(lengths.sum())


def read_suite(config: RunConfig, suite: Path, cache: Path) -> tuple[dict[str, TaskSets], dict[str, RunConfig], Any]:
    """Every task's sets as its own target run prepares them (the sources' sets are these same few-sample sets)."""
    tasks = suite_tasks(suite)
    sets, configs, base = {}, {}, None
    for target in tasks:
        others = [t for t in tasks if t != target]
        configs[target] = suite_target_config(config, suite, target, others)
        # the target's own sets are all that is read here: one source (the least a config holds), not six
        base, data, _ = prepare_inputs(suite_target_config(config, suite, target, others[:1]), cache)
        sets[target] = TaskSets(data.train, data.dev, data.test)
    return sets, configs, base


def store_size(sets: dict[str, TaskSets], hidden: int) -> dict[str, Any]:
    """Distinct rows and tokens over every set of the suite: what the trunk store holds."""
    tokens: dict[str, int] = {}
    for task in sets.values():
        for data in (task.train, task.dev, task.test):
            keys, lengths = row_keys(data.encoded), data.encoded.lengths.numpy()
            for index in zip(*np.nonzero(lengths)):
                tokens[keys[index]] = int(lengths[index])
    total = sum(tokens.values())
    return {"distinct_rows": len(tokens), "tokens": total, "hidden": hidden,
            "float16_gb": total * hidden * 2 / 1e9, "float32_gb": total * hidden * 4 / 1e9}


def _timed(work) -> float:
    began = time.perf_counter()
    work()
    return time.perf_counter() - began


def _second_of_two(work) -> float:
    """Seconds of ``work``'s second run: the first warms up allocators and kernels."""
    work()
    return _timed(work)


def step_costs(task: TaskSets, config: RunConfig, base, depth: int, rows: int, cache: Path) -> dict[str, float]:
    """Seconds per row of training and of scoring, every layer and top layers on stored states, and of computing
    a row's trunk states; on the first ``rows`` examples of the task's train set (after one warm-up pass)."""
    sample = task.train.subset(np.arange(min(rows, len(task.train.examples))))
    shape, spec = get_shape(sample.task.shape), sample.task
    recipe = config.target.train.model_copy(update={"epochs": 1, "select": "last", "linear_probe": False})
    n_rows = rows_of(sample)[0]
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        store = TrunkStore(Path(tmp), "cost", trunk_model(base), depth, config.model.trunk_dtype)
        trunk = _timed(lambda: store.states(sample.encoded, "cost"))
        staged = replace(sample, encoded=replace(sample.encoded, states=store.states(sample.encoded, "cost")))
        costs = {"trunk_row": trunk / n_rows}
        for name, data in (("full", sample), ("top", staged)):
            model = new_model(base.folder, spec.shape, spec.labels, base.pooling)
            costs[f"{name}_score_row"] = _second_of_two(lambda: predict_logits(model, shape, data.encoded)) / n_rows
            costs[f"{name}_train_row"] = _second_of_two(lambda: fine_tune({spec.name: model}, {spec.name: data},
                                                                          None, recipe, 0, desc="cost")) / n_rows
        store.close()
    return costs


def cost_model(sets: dict[str, TaskSets], configs: dict[str, RunConfig], steps: dict[str, dict[str, float]],
               mode: str, one_multitask: bool, distinct_rows: dict[str, int]) -> dict[str, Any]:
    """Hours per stage and per target of one seed, from the passes it makes and the seconds per row of ``mode``
    ("full" or "top")."""
    stages = dict.fromkeys(STAGES, 0.0)
    per_target = {}

    def expert_seconds(task: str, cfg: RunConfig) -> float:
        rows_train, rows_dev = rows_of(sets[task].train)[0], rows_of(sets[task].dev)[0]
        epochs = cfg.experts.train.epochs
        return epochs * (rows_train * steps[task][f"{mode}_train_row"] + rows_dev * steps[task][f"{mode}_score_row"])

    any_config = next(iter(configs.values()))
    stages["experts"] = sum(expert_seconds(t, any_config) for t in sets)  # each task's expert: once per seed
    if mode == "top":
        stages["trunk"] = sum(distinct_rows[t] * steps[t]["trunk_row"] for t in sets)
    if one_multitask:
        stages["multitask experts"] = stages["experts"]
    for target, cfg in configs.items():
        s, rows_train = steps[target], rows_of(sets[target].train)[0]
        rows_dev, rows_test = rows_of(sets[target].dev)[0], rows_of(sets[target].test)[0]
        multitask = 0.0 if one_multitask else sum(expert_seconds(t, cfg) for t in cfg.data.sources)
        ingredients = len(cfg.data.sources) + 2  # each expert, the multitask expert, the pretrained model
        recipes = max(1, len(cfg.target.grid or []))
        epochs = cfg.target.train.epochs
        fine_tunes = ingredients * recipes * (epochs * (rows_train * s[f"{mode}_train_row"]
                                                        + rows_dev * s[f"{mode}_score_row"])
                                              + rows_train * s[f"{mode}_score_row"])  # the probe's features
        search = cfg.search.budget * (rows_dev + rows_train) * s[f"{mode}_score_row"]  # dev pass + refit
        scoring = (ingredients + 3) * rows_test * s[f"{mode}_score_row"]  # ingredients, two soups, dfwe
        stages["multitask experts"] += multitask
        stages["target fine-tunes"] += fine_tunes
        stages["search"] += search
        stages["test scoring"] += scoring
        per_target[target] = (multitask + fine_tunes + search + scoring) / HOUR
    stages = {k: v / HOUR for k, v in stages.items()}
    return {"measured": False, "stages": stages, "per_target": per_target, "total_hours": sum(stages.values())}


# a run's timed stages (``timing_seconds``) under the names of the cost model's; a run's "experts" also holds the
# one multitask expert, and its "evaluate" scores every method on every split and the loss barriers
MEASURED_STAGE = {"target": "target fine-tunes", "evaluate": "test scoring"}


def measured_run(units: Path) -> dict[str, Any] | None:
    """Wall hours per stage and target of the chosen settings' run, from the finished units of
    ``benchmarks/feta_friends.py`` (one target and seed each; a target's hours are the mean over its seeds)."""
    found = read_units(units)
    if not found:
        return None
    stages: dict[str, float] = {}
    per_target, per_candidate = {}, {}
    per_seed: dict[str, dict[str, Any]] = {}
    for target, seeds in sorted(found.items()):
        for seed, unit in sorted(seeds.items()):
            for stage, value in unit["timing_seconds"].items():
                name = MEASURED_STAGE.get(stage, stage)
                stages[name] = stages.get(name, 0.0) + value / HOUR / len(seeds)
            entry = per_seed.setdefault(str(seed), {"targets": [], "hours": 0.0})
            entry["targets"].append(target)
            entry["hours"] += sum(unit["timing_seconds"].values()) / HOUR
        per_target[target] = float(np.mean([sum(u["timing_seconds"].values()) for u in seeds.values()])) / HOUR
        candidates = [s for u in seeds.values() for s in u.get("search_candidate_seconds") or []]
        if candidates:
            per_candidate[target] = {"candidates": len(candidates), "median_seconds": float(np.median(candidates))}
    return {"measured": True, "stages": stages, "per_target": per_target, "total_hours": sum(stages.values()),
            "targets_finished": len(found), "search_candidate_seconds": per_candidate, "per_seed": per_seed}


# the settings that decide what one seed costs, as the units' configs record them
COST_SETTINGS = ("model.trainable_layers", "experts.train.lr", "data.choice_encoding", "data.answerless_windows",
                 "target.train.probe_c", "merge.probe_c", "merge.refit_iterations", "search.budget", "eval.barriers",
                 "runtime.threads")


def cost_settings(config: dict[str, Any]) -> dict[str, Any]:
    """:data:`COST_SETTINGS` as a config (a unit's, or the resolved one) holds them."""

    def value(key: str) -> Any:
        section: Any = config
        for part in key.split("."):
            section = section.get(part) if isinstance(section, dict) else None
        return section

    return {key: value(key) for key in COST_SETTINGS}


def run_settings(units: Path) -> dict[str, Any]:
    """:func:`cost_settings` of the units' run (every unit of one run holds the same config)."""
    return cost_settings(next(iter(next(iter(read_units(units).values())).values()))["config"])


def refresh_measured(path: Path, units: Path | None) -> None:
    """Replace the measured run of an existing result with what the units say now (more targets or seeds landed),
    without timing the steps again (a timing beside a running benchmark would be wrong)."""
    if units is None or not path.is_file():
        raise SystemExit("--measured-only needs --units and an existing --json")
    result = json.loads(path.read_text())
    measured = measured_run(units)
    if measured is None:
        raise SystemExit(f"{units}: no units")
    settings = run_settings(units)
    modelled = result["chosen"].get("modelled")
    if modelled is not None and modelled.get("settings", result["chosen"].get("settings")) != settings:
        print("the cost model was made for other settings than the units': dropped (run without --measured-only "
              "to model these)", file=sys.stderr)
        modelled = None
    result["chosen"] = {**measured, "settings": settings, **({"modelled": modelled} if modelled else {})}
    columns = {"today (modelled)": result["today"], **({"chosen (modelled)": modelled} if modelled else {}),
               "chosen (measured)": measured}
    print_table("hours, one seed, all seven targets", columns)
    for seed, entry in measured["per_seed"].items():
        print(f"seed {seed}: {entry['hours']:.2f} h over {len(entry['targets'])} targets")
    path.write_text(json.dumps(result, indent=2))


def print_table(title: str, columns: dict[str, dict[str, Any]]) -> None:
    print(f"\n{title}\n| stage | " + " | ".join(columns) + " |\n| --- |" + " ---: |" * len(columns))
    names = list(dict.fromkeys(k for c in columns.values() for k in c["stages"]))
    for name in [*names, "total"]:
        cells = [c["stages"].get(name) if name != "total" else c["total_hours"] for c in columns.values()]
        print(f"| {name} | " + " | ".join("-" if v is None else f"{v:.2f}" for v in cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", type=Path, default=Path("../shared/data/feta_friends"))
    parser.add_argument("--cache", type=Path, required=True, help="the data stage's work folder (and temp stores)")
    parser.add_argument("--units", type=Path, default=None,
                        help="the finished units of the chosen settings' run (benchmarks/feta_friends.py units)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="the chosen settings")
    parser.add_argument("--rows", type=int, default=32, help="train examples per task the step costs are timed on")
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--measured-only", action="store_true",
                        help="re-read the units into an existing --json, keeping its timed steps and cost model")
    args = parser.parse_args()
    if args.measured_only:
        refresh_measured(args.json, args.units)
        return
    overrides = parse_overrides(args.set)
    chosen = load_config(feta_config_path(), overrides)
    args.cache.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(chosen.runtime.threads or torch.get_num_threads())

    sets, configs, base = read_suite(chosen, args.suite, args.cache)
    depth = trunk_depth(chosen.model.trainable_layers, base)
    if depth is None:
        raise SystemExit("--set model.trainable_layers=N: the chosen settings train on a frozen trunk")
    hidden = trunk_model(base).config.encoder_config.hidden_size
    sizes = {t: {split: dict(zip(("rows", "tokens"), rows_of(getattr(s, split)))) for split in ("train", "dev", "test")}
             for t, s in sets.items()}
    store = store_size(sets, hidden)
    distinct = {t: sum(v["rows"] for v in sizes[t].values()) for t in sets}
    print(json.dumps({"sets": sizes, "store": store}, indent=1))
    steps = {t: step_costs(s, chosen, base, depth, args.rows, args.cache) for t, s in sets.items()}
    for t, s in steps.items():
        print(f"{t:28s} " + "  ".join(f"{k} {v * 1000:7.1f} ms" for k, v in s.items()), flush=True)

    one_multitask = chosen.experts.multitask_target
    today = cost_model(sets, configs, steps, "full", one_multitask=False, distinct_rows=distinct)
    modelled = cost_model(sets, configs, steps, "top", one_multitask, distinct)
    measured = measured_run(args.units) if args.units else None
    result = {"today": {**today, "settings": {"model.trainable_layers": "all", "experts.multitask_target": False}},
              "chosen": {**(measured or modelled), "settings": run_settings(args.units) if measured else overrides,
                         "modelled": {**modelled, "settings": cost_settings(config_to_dict(chosen))}},
              "sets": sizes, "store": store, "steps_seconds_per_row": steps,
              "machine": {"threads": torch.get_num_threads(), "torch": torch.__version__}}
    columns = {"today (modelled)": today, "chosen (modelled)": modelled}
    if measured:
        columns["chosen (measured)"] = measured
    print_table("hours, one seed, all seven targets", columns)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
