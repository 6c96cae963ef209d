"""What does a good search cost? Every backend on the demo's ingredients at budgets 20/50/100: evaluations
and wall time until its best-so-far dev score is within 0.5 points of the best any backend finds; serial
against Ray with 2 workers; full fidelity against successive halving. Prints tables, writes JSON, asserts
nothing.

    python benchmarks/search_cost.py --out benchmarks/results/search_cost.json

The demo run (the ingredients) is made once under --work and reused.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from dfwe.config import demo_config_path, load_config  # noqa: E402
from dfwe.merge.fold import FoldSpec  # noqa: E402
from dfwe.pipeline import run  # noqa: E402
from dfwe.runtime import RuntimeOptions  # noqa: E402
from dfwe.search.run import SearchConfig, search_weights  # noqa: E402

BACKENDS = ("cma", "ngopt", "optuna-tpe", "optuna-cma", "nelder-mead", "random")
BUDGETS = (20, 50, 100)
WITHIN = 0.005  # half a point of weighted F1


def demo_fold(work: Path) -> tuple[FoldSpec, object]:
    """The demo's fine-tuned ingredients and its dev set (the demo is run once if needed)."""
    from dfwe.data.prepare import locate_suite, prepare_data
    from dfwe.train.base import prepare_base
    from dfwe.train.target import folder_name

    config = load_config(demo_config_path(), {"search.budget": 2, "search.coarse_budget": 0, "eval.bootstrap": 0})
    if not (work / "results.json").is_file():
        run(config, work, overwrite=True)
    cache = work / "work"
    suite = locate_suite(config.data, cache, config.seed)
    base = prepare_base(config.model, suite, cache, config.seed, config.data.max_length_of(config.data.target))
    data = prepare_data(config.data, suite, base.tokenizer, config.seed)
    keys = json.loads((work / "results.json").read_text())["cache_keys"]["ingredients"]
    folders = tuple(cache / "ingredients" / f"{folder_name(name)}-{key}" for name, key in keys.items())
    return FoldSpec(folders, data.dev, device="cpu"), data


def timed_search(spec: FoldSpec, settings: SearchConfig, seed: int, workers: int = 1) -> dict:
    fold = spec.build()
    start = time.perf_counter()
    _, result = search_weights([fold], settings, seed, specs=[spec], runtime=RuntimeOptions(workers=workers))
    seconds = time.perf_counter() - start
    scores = [-r.objective for r in result.full]  # objective = -weighted F1
    return {"seconds": seconds, "scores": scores, "best": max(scores),
            "seconds_each": [r.seconds for r in result.full], "best_weights": result.best.weights.tolist(),
            "full_evaluations": len(result.full), "candidates": result.candidates}


def to_target(entry: dict, target: float) -> tuple[int | None, float | None]:
    """Evaluations (and scoring seconds) until the best-so-far is within WITHIN of ``target``."""
    for i, score in enumerate(np.maximum.accumulate(entry["scores"])):
        if score >= target - WITHIN:
            return i + 1, float(sum(entry["seconds_each"][: i + 1]))
    return None, None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("runs/search-cost-demo"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/search_cost.json"))
    args = parser.parse_args()
    spec, _ = demo_fold(args.work)
    base = dict(objective="weighted_f1", granularity="layer")

    runs: dict[str, dict] = {}
    for backend in BACKENDS:
        for budget in BUDGETS:
            for seed in args.seeds:
                runs[f"{backend}/{budget}/{seed}"] = timed_search(
                    spec, SearchConfig(**base, optimizer=backend, budget=budget), seed)
                print(f"{backend:12s} budget {budget:3d} seed {seed}: best dev wF1 "
                      f"{runs[f'{backend}/{budget}/{seed}']['best']:.4f}", flush=True)
    target = max(r["best"] for r in runs.values())
    table = [f"best dev weighted F1 found by any backend: {target:.4f}; target = within {WITHIN * 100:.1f} points", "",
             "| backend | budget | mean best dev wF1 | runs reaching target | mean evaluations to target "
             "| mean scoring seconds to target | mean wall seconds (whole search) |", "| --- " * 7 + "|"]
    summary = []
    for backend in BACKENDS:
        for budget in BUDGETS:
            entries = [runs[f"{backend}/{budget}/{s}"] for s in args.seeds]
            reached = [to_target(e, target) for e in entries]
            hit = [r for r in reached if r[0] is not None]
            row = {"backend": backend, "budget": budget, "mean_best": float(np.mean([e["best"] for e in entries])),
                   "reached": len(hit), "runs": len(entries),
                   "evaluations_to_target": float(np.mean([h[0] for h in hit])) if hit else None,
                   "seconds_to_target": float(np.mean([h[1] for h in hit])) if hit else None,
                   "wall_seconds": float(np.mean([e["seconds"] for e in entries]))}
            summary.append(row)
            fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
            table.append(f"| {backend} | {budget} | {row['mean_best']:.4f} | {len(hit)}/{len(entries)} | "
                         f"{fmt(row['evaluations_to_target'], '.1f')} | {fmt(row['seconds_to_target'], '.2f')} | "
                         f"{row['wall_seconds']:.2f} |")

    # serial against two Ray workers, and full fidelity against successive halving, same seed and batch
    parallel = {}
    for label, extra, workers in (("serial, batch 2", dict(batch=2), 1), ("Ray, 2 workers", dict(batch=2), 2),
                                  ("full fidelity, batch 9", dict(batch=9), 1),
                                  ("halving 1/3, batch 9", dict(batch=9, halving=True), 1)):
        parallel[label] = timed_search(spec, SearchConfig(**base, optimizer="cma", budget=100, **extra), 0, workers)
    table += ["", "| cma, budget 100 | wall seconds | full evaluations | best dev wF1 | best weights same as full/serial |",
              "| --- " * 5 + "|"]
    for label, entry in parallel.items():
        reference = parallel["serial, batch 2"] if "2" in label else parallel["full fidelity, batch 9"]
        same = np.allclose(entry["best_weights"], reference["best_weights"])
        table.append(f"| {label} | {entry['seconds']:.2f} | {entry['full_evaluations']} | {entry['best']:.4f} | "
                     f"{'yes' if same else 'no'} |")
    print("\n" + "\n".join(table))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"target": target, "summary": summary, "runs": runs, "parallel": parallel,
                                    "table": table}, indent=2))


if __name__ == "__main__":
    main()
