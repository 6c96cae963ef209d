"""Issue 19's table: full fine-tuning (``model.trainable_layers: all``) against a frozen trunk (N = 1, 2, 3 top
layers training) on Friends k = 8, seeds 0-2, every method on validation and test side by side, the wall time of
each stage, and the N chosen on validation. Reads finished ``dfwe bench`` folders; writes JSON, prints tables.

    python benchmarks/friends_protocol.py --data-dir ../shared/data/friends --out runs/trunk-k8 --cache runs/cache \
        --shots 8 --seeds 0 1 2 --set experts.seed=0 --set runtime.threads=2 --variants "trainable_layers=1"   # 2, 3
    python benchmarks/trunk_friends.py --all benchmarks/results/friends_k8.json \
        --row 1=runs/trunk-k8/k8/trainable_layers-1 --row 2=... --row 3=... --json benchmarks/results/trunk_friends_k8.json

The rule, on validation only: the smallest N (the cheapest) whose dfwe stays within ``--tolerance`` (0.01) of
full fine-tuning's dfwe, as the mean over seeds of the per-seed difference (each seed's two runs share the
few-sample draws and the 1,109 validation utterances); none within it: ``chosen`` is "all".
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

METHODS = ("dfwe", "uniform-soup", "greedy-soup", "logit-ensemble", "multitask-ft", "best-expert-ft", "base-ft")


def per_seed(results: dict, method: str, split: str, metric: str) -> dict[str, float]:
    return {s: r["methods"][method][split][metric] for s, r in results["seeds"].items()
            if split in r["methods"].get(method, {})}


def versus(results: dict, reference: dict, method: str, split: str, metric: str) -> tuple[float, float] | None:
    """Mean and sample std over shared seeds of ``method``'s score here minus in ``reference``."""
    mine, theirs = per_seed(results, method, split, metric), per_seed(reference, method, split, metric)
    diffs = [mine[s] - theirs[s] for s in sorted(set(mine) & set(theirs))]
    if not diffs:
        return None
    return float(np.mean(diffs)), float(np.std(diffs, ddof=1)) if len(diffs) > 1 else 0.0


def stage_seconds(results: dict) -> dict[str, float]:
    """Wall seconds per stage, summed over seeds (experts shared by the seeds are trained in the first)."""
    total: dict[str, float] = {}
    for seed in results["seeds"].values():
        for stage, value in seed["timing_seconds"].items():
            total[stage] = total.get(stage, 0.0) + value
    return total


def cell(summary: dict, method: str, split: str, metric: str) -> str:
    value = summary.get(method, {}).get(split, {}).get(metric)
    return "-" if value is None else f"{value['mean']:.3f} ± {value['std']:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--all", type=Path, required=True, help="results.json of trainable_layers: all")
    parser.add_argument("--row", action="append", default=[], metavar="N=FOLDER", help="a bench folder per N")
    parser.add_argument("--tolerance", type=float, default=0.01)
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()
    rows: dict[str, dict[str, Any]] = {"all": json.loads(args.all.read_text())}
    for spec in args.row:
        n, folder = spec.split("=", 1)
        rows[n] = json.loads((Path(folder) / "results.json").read_text())
    reference = rows["all"]
    metric = reference["task"]["metric"]

    print("| trainable layers | split | " + " | ".join(METHODS) + " | dfwe − all's dfwe (per seed) |")
    print("| --- | --- |" + " ---: |" * (len(METHODS) + 1))
    gaps = {}
    for n, results in rows.items():
        for split in ("validation", "test"):
            gap = versus(results, reference, "dfwe", split, metric) if n != "all" else None
            if split == "validation" and gap is not None:
                gaps[n] = gap
            shown = "-" if gap is None else f"{gap[0]:+.3f} ± {gap[1]:.3f}"
            print(f"| {n} | {split} | " + " | ".join(cell(results["summary"], m, split, metric) for m in METHODS)
                  + f" | {shown} |")
    # rows are named by N, with a suffix for a recipe variant ("1lr"): the fewest trainable layers is the cheapest
    within = sorted((n for n, (mean, _) in gaps.items() if mean >= -args.tolerance),
                    key=lambda n: (int("".join(c for c in n if c.isdigit()) or 0), n))
    chosen: int | str = (int(within[0]) if within[0].isdigit() else within[0]) if within else "all"

    stages = {n: stage_seconds(r) for n, r in rows.items()}
    names = list(dict.fromkeys(k for s in stages.values() for k in s))
    print("\n| trainable layers | " + " | ".join(names) + " | total |\n| --- |" + " ---: |" * (len(names) + 1))
    for n, seconds in stages.items():
        print(f"| {n} | " + " | ".join(f"{seconds.get(k, 0):.0f}" for k in names) + f" | {sum(seconds.values()):.0f} |")
    print(f"\nchosen on validation (within {args.tolerance} of all): {chosen}")
    args.json.write_text(json.dumps({"chosen": chosen, "tolerance": args.tolerance, "metric": metric,
                                     "dfwe_validation_gap": {n: {"mean": m, "std": s} for n, (m, s) in gaps.items()},
                                     "stage_seconds": stages, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
