"""Issue 20: does a dev-fitted decision threshold change who wins relation extraction?

FETA-Friends' relation extraction is scored by micro F1 without ``unanswerable``; dfwe's multilabel rule predicts
every label whose probability exceeds one half, else the most probable one. At this target's F1 (about 0.2) the
F1-optimal threshold of a calibrated model is far below one half (about F1 / 2), so the rule mostly predicts the
argmax, and which frequent relation wins the argmax decides much of the score. DialogRE's own baselines fit the
threshold on dev. This reads a finished run's cached outputs (every method's logits on dev, validation and test,
from the run's ``--cache``; nothing is retrained or re-merged when the cache holds them), fits each method's
threshold on the few-sample dev set, and prints every method's validation and test micro F1 under both rules, and
dfwe's paired differences to ``base-ft`` and the uniform soup. Validation decides; test is printed beside it so
that the round is reported whatever it shows. Asserts nothing.

    python benchmarks/multilabel_threshold.py --cache runs/cache-v2 \\
        runs/feta-v3-s1/targets/relation_extraction/seeds/1 ... --json benchmarks/results/re_threshold.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from dfwe.config import load_config  # noqa: E402
from dfwe.data.metrics import metric_stats  # noqa: E402
from dfwe.data.sets import ExampleSet  # noqa: E402
from dfwe.eval.baselines import BEST_SINGLE  # noqa: E402
from dfwe.eval.scores import Merge, method_logits  # noqa: E402
from dfwe.io import atomic_write_json  # noqa: E402
from dfwe.pipeline import head_rule, trained_stages  # noqa: E402
from dfwe.runtime import torch_threads  # noqa: E402
from dfwe.stats import MetricStats, paired_difference  # noqa: E402

THRESHOLDS = tuple(round(p, 2) for p in np.arange(0.05, 0.501, 0.05))  # probabilities; 0.5 is the current rule
COMPARED = ("base-ft", "uniform-soup")


def stats_at(logits: np.ndarray, data: ExampleSet, threshold: float) -> MetricStats:
    """Per-example micro-F1 statistics when every label above ``threshold`` (a probability) is predicted."""
    return metric_stats(logits - np.log(threshold / (1 - threshold)), data)  # the shape's rule is "logit > 0"


def fitted_threshold(logits: np.ndarray, data: ExampleSet, metric: str) -> float:
    """The threshold of :data:`THRESHOLDS` with the best dev score; ties go to the highest (nearest one half)."""
    scores = [stats_at(logits, data, t).value()[metric] for t in THRESHOLDS]
    best = max(scores)
    return max(t for t, s in zip(THRESHOLDS, scores) if s == best)


def run_outputs(seed_dir: Path, cache: Path) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, ExampleSet], dict]:
    """Every method's logits per split of the finished run in ``seed_dir``, from the cache it ran with."""
    stages = trained_stages(load_config(seed_dir / "config.yaml"), cache)
    results = json.loads((seed_dir / "results.json").read_text())
    config, data, ingredients, fold = stages.config, stages.data, stages.ingredients, stages.dev_fold()
    methods = results["methods"]
    merges = {"uniform-soup": Merge(np.asarray(methods["uniform-soup"]["weights"])),
              "greedy-soup": Merge(np.asarray(methods["greedy-soup"]["weights"])),
              "dfwe": Merge(np.asarray(methods["dfwe"]["weights"]), methods["dfwe"]["method"])}
    splits = {"dev": data.dev, "test": data.test, "validation": data.validation}
    outputs = method_logits(fold, stages.pool.keys, ingredients.names, merges, splits, cache / "logits",
                            head_rule(config, data), config.runtime.eval_batch_size, stages.singles())
    selected = methods[BEST_SINGLE]["selected"]
    for by_method in outputs.values():
        by_method[BEST_SINGLE] = by_method[selected]
    return outputs, splits, results


def seed_report(seed_dir: Path, cache: Path, resamples: int) -> dict[str, Any]:
    """Both rules' scores of every method, and dfwe's paired differences, for one finished seed."""
    outputs, splits, results = run_outputs(seed_dir, cache)
    metric, seed = results["task"]["metric"], results["config"]["seed"]
    report: dict[str, Any] = {"run": str(seed_dir), "seed": seed, "methods": {}, "dfwe_minus": {}}
    stats: dict[str, dict[str, dict[str, MetricStats]]] = {"half": {}, "dev": {}}
    for method in outputs["dev"]:
        threshold = fitted_threshold(outputs["dev"][method], splits["dev"], metric)
        row = {"threshold": threshold}
        for rule, t in (("half", 0.5), ("dev", threshold)):
            for split in ("dev", "validation", "test"):
                s = stats_at(outputs[split][method], splits[split], t)
                row[f"{split}_{rule}"] = s.value()[metric]
                stats[rule].setdefault(split, {})[method] = s
        report["methods"][method] = row
    for rule in ("half", "dev"):
        for split in ("validation", "test"):
            for other in COMPARED:
                d = paired_difference(stats[rule][split]["dfwe"], stats[rule][split][other], resamples, seed)[metric]
                report["dfwe_minus"][f"{other}/{split}/{rule}"] = {"difference": d["diff"], "interval": d["ci"],
                                                                   "verdict": d["verdict"]}
    return report


def print_report(report: dict[str, Any]) -> None:
    print(f"\n{report['run']}")
    print(f"{'method':40s} {'t':>5s} {'val@.5':>7s} {'val@dev':>7s} {'test@.5':>7s} {'test@dev':>8s}")
    for method, row in report["methods"].items():
        print(f"{method:40s} {row['threshold']:5.2f} {row['validation_half']:7.3f} {row['validation_dev']:7.3f} "
              f"{row['test_half']:7.3f} {row['test_dev']:8.3f}")
    for key, d in report["dfwe_minus"].items():
        lo, hi = d["interval"]
        print(f"  dfwe - {key:32s} {d['difference']:+.3f} [{lo:+.3f}, {hi:+.3f}] {d['verdict']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("seed_dirs", nargs="+", type=Path, help="finished seed folders of a multilabel target")
    parser.add_argument("--cache", type=Path, required=True, help="the --cache the runs used")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    began = time.perf_counter()
    with torch_threads(args.threads):
        reports = [seed_report(d, args.cache, args.resamples) for d in args.seed_dirs]
    for report in reports:
        print_report(report)
    methods = list(reports[0]["methods"])
    print(f"\nmean over {len(reports)} seeds: validation / test, rule 0.5 -> dev threshold")
    for method in methods:
        mean = {k: float(np.mean([r["methods"][method][k] for r in reports]))
                for k in ("validation_half", "validation_dev", "test_half", "test_dev")}
        print(f"{method:40s} {mean['validation_half']:.3f} -> {mean['validation_dev']:.3f}   "
              f"{mean['test_half']:.3f} -> {mean['test_dev']:.3f}")
    print(f"({time.perf_counter() - began:.0f} s)")
    if args.json:
        atomic_write_json(args.json, {"thresholds": THRESHOLDS, "seeds": reports})


if __name__ == "__main__":
    main()
