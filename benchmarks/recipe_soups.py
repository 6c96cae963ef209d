"""Issue 20, round 10's first reading: soups over every recipe's fine-tune, not only the recipe each ingredient kept.

Every ingredient tries each recipe of ``target.grid`` (two learning rates on FETA-Friends) and keeps one by its dev
loss; the other fine-tune, trained from the same start, is cached and unused. Model soups (Wortsman et al. 2022)
average fine-tunes of one start across hyperparameters, so the recipes' fine-tunes are ingredients a merge could
use. For each finished unit (its ``results.json`` and the cache it ran from; nothing is trained) this scores, with the
run's head rule, on dev (the search objective, calibrated loss) and on validation (the headline metric):
the uniform soup of the kept fine-tunes (the run's own uniform soup), the uniform soup of every recipe's fine-tune,
the greedy soup over every recipe's fine-tune (chosen on dev), and the run's dfwe weights with each ingredient's
weight split equally over its recipes. Test is never read. Asserts nothing.

    python benchmarks/recipe_soups.py --runs runs/feta-r9ref-s0 runs/feta-r9ref-s1 --cache runs/cache-v2 \\
        --json benchmarks/results/feta_round10/recipe_soups.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from dfwe.config import config_from_dict  # noqa: E402
from dfwe.data.metrics import score  # noqa: E402
from dfwe.eval.baselines import choose_on_dev  # noqa: E402
from dfwe.io import atomic_write_json  # noqa: E402
from dfwe.merge.fold import FoldSpec  # noqa: E402
from dfwe.pipeline import head_refit, trained_stages  # noqa: E402
from dfwe.runtime import torch_threads  # noqa: E402


def unit_rows(results: dict, cache: Path) -> dict:
    """The four merges of one unit over every recipe's fine-tune, scored on dev and validation."""
    stages = trained_stages(config_from_dict(results["config"], origin="the run's results.json"), cache)
    config, data, items = stages.config, stages.data, stages.ingredients.items
    if any(not item.tried for item in items):
        raise SystemExit("an ingredient was cached whole by an earlier version: its recipes' folders are unknown")
    folders = [fine_tune.folder for item in items for fine_tune in item.tried]
    owner = np.array([index for index, item in enumerate(items) for _ in item.tried])
    kept = np.array([folder == items[i].folder for folder, i in zip(folders, owner)], dtype=float)
    fold = FoldSpec(tuple(folders), data.dev, None, config.runtime.device, head_refit(config, data.train),
                    stages.depth).build()
    dfwe = np.asarray(results["methods"]["dfwe"]["weights"], dtype=float)
    if dfwe.shape[0] != 1:
        raise SystemExit("per-layer dfwe weights: this reading splits model-level weights only")
    dfwe = dfwe[0]
    metric = data.target.metric
    # each ingredient, kept fine-tune against recipe soup, as a single model (its own head: the shared probe), and
    # the member a per-ingredient rule would put in the pool: the lower calibrated dev loss
    members, singles = [], {}
    for index, item in enumerate(items):
        own = owner == index
        candidates = {"kept": kept * own, "soup": own / own.sum()}
        scored = {}
        for kind, weights in candidates.items():
            fold.merge("linear", weights, refit=False)
            scored[kind] = {"dev_calibrated_loss": score(fold.logits(data.dev), data.dev)["calibrated_loss"],
                            f"validation_{metric}": score(fold.logits(data.validation), data.validation)[metric]}
        choice = min(scored, key=lambda kind: scored[kind]["dev_calibrated_loss"])
        members.append(candidates[choice])
        singles[item.name] = {**scored, "chosen": choice}
    chosen = np.sum(members, axis=0)
    per_recipe = np.array([1.0 / len(items[i].tried) for i in owner])
    merges = {"uniform-kept": kept / kept.sum(), "uniform-all": np.full(len(folders), 1.0 / len(folders)),
              "greedy-all": choose_on_dev(fold, data.target.metric).greedy, "dfwe-split": dfwe[owner] * per_recipe,
              "uniform-chosen": chosen / len(items), "dfwe-chosen": dfwe[owner] * chosen}
    rows = {}
    for name, weights in merges.items():
        fold.merge("linear", weights)
        dev = score(fold.logits(data.dev), data.dev)
        validation = score(fold.logits(data.validation), data.validation)
        rows[name] = {"weights": weights.round(4).tolist(), "dev_calibrated_loss": dev["calibrated_loss"],
                      f"dev_{metric}": dev[metric], f"validation_{metric}": validation[metric]}
        print(f"{config.data.target:26s} seed {config.seed} {name:13s} dev loss {dev['calibrated_loss']:.4f}  "
              f"dev {dev[metric]:.4f}  validation {validation[metric]:.4f}", flush=True)
    print(f"{config.data.target:26s} seed {config.seed} soups chosen on dev: "
          + ", ".join(name for name, row in singles.items() if row["chosen"] == "soup"), flush=True)
    return {"metric": metric, "ingredients": [f.name for f in folders], "rows": rows, "singles": singles,
            "run_validation": {m: results["methods"][m]["validation"][metric] for m in ("uniform-soup", "dfwe")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, nargs="+", required=True, help="dfwe bench --suite folders")
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    units = {}
    for path in sorted(p for run in args.runs for p in run.glob("targets/*/seeds/*/results.json")):
        results = json.loads(path.read_text())
        with torch_threads(results["config"]["runtime"]["threads"]):
            units[f"{results['config']['data']['target']}/{results['config']['seed']}"] = unit_rows(results, args.cache)
    names = ["uniform-kept", "uniform-all", "greedy-all", "dfwe-split", "uniform-chosen", "dfwe-chosen"]
    for split in ("dev_calibrated_loss", "validation"):
        means = {n: np.mean([next(v for k, v in u["rows"][n].items() if k.startswith(split)) for u in units.values()])
                 for n in names}
        print(f"mean over {len(units)} units, {split}: " + "  ".join(f"{n} {v:.4f}" for n, v in means.items()))
    if args.json:
        atomic_write_json(args.json, {"runs": [str(r) for r in args.runs], "units": units})


if __name__ == "__main__":
    main()
