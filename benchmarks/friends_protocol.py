"""The Friends protocol and its ablation: ``dfwe bench`` at each k for the default config and for variants
that each change one option, all sharing one cache (experts are trained once per seed; target fine-tunes
are shared by variants that differ only in their search). Prints tables, writes JSON; asserts nothing.

    python benchmarks/friends_protocol.py --data-dir ../shared/data/friends --out runs/friends-protocol

Each variant row is reproduced on its own by
    dfwe bench --data-dir D --shots K --seeds 0 1 2 --out OUT --set KEY=VALUE ...   (the variant's overrides)

Every method is also scored on the official dev split ("validation"): compare variants there, not on test.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from dfwe.bench import run_bench  # noqa: E402
from dfwe.config import friends_config_path, load_config  # noqa: E402
from dfwe.report.write import HEADLINE  # noqa: E402

# Each variant changes the default (configs/friends.yaml) in one respect.
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "objective=loss": {"search.objective": "loss"},
    "objective=weighted_f1": {"search.objective": "weighted_f1"},
    "init=uniform": {"search.init": "uniform"},
    "no linear probe": {"target.train.linear_probe": False},
    "cross-fitting": {"search.crossfit": True},
    "anchor penalty": {"search.penalty": "anchor", "search.penalty_strength": 0.1},
    "granularity=layer": {"search.granularity": "layer", "search.coarse_budget": 20},
}
BASELINES = ("multitask-ft", "best-expert-ft", "greedy-soup", "logit-ensemble", "uniform-soup", "base-ft")


def cell(summary: dict, method: str, split: str) -> str:
    value = summary[method][split][HEADLINE]
    return f"{value['mean']:.3f} ± {value['std']:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data/friends"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--shots", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="applies to every variant (e.g. a reduced CPU protocol)")
    parser.add_argument("--deadline", type=float, default=None, help="skip variants that start after this many s")
    args = parser.parse_args()
    import yaml

    common = {k: yaml.safe_load(v) for k, v in (pair.split("=", 1) for pair in args.set)}
    start = time.perf_counter()
    table: dict[str, dict[int, dict]] = {}
    for variant in args.variants:
        for shots in args.shots:
            if args.deadline and time.perf_counter() - start > args.deadline:
                print(f"skipping {variant} k={shots}: past the deadline", flush=True)
                continue
            overrides = {**common, "data.data_dir": str(args.data_dir), "data.shots": shots,
                         "eval.validation": True, **VARIANTS[variant]}
            config = load_config(friends_config_path(), overrides)
            out = args.out / f"k{shots}" / variant.replace("=", "-").replace(" ", "-")
            began = time.perf_counter()
            results = run_bench(config, args.seeds, out, resume=True, cache=args.out / "cache")
            table.setdefault(variant, {})[shots] = {"summary": results["summary"],
                                                    "seconds": time.perf_counter() - began,
                                                    "overrides": {**common, **VARIANTS[variant]}}
            summary = results["summary"]
            print(f"{variant:24s} k={shots:2d}  dfwe validation {cell(summary, 'dfwe', 'validation')}  "
                  f"test {cell(summary, 'dfwe', 'test')}  | multitask-ft test {cell(summary, 'multitask-ft', 'test')}"
                  f"  ({time.perf_counter() - began:.0f}s)", flush=True)
            (args.out / "protocol.json").write_text(json.dumps(table, indent=2))
    lines = []
    for shots in args.shots:
        lines += [f"### k = {shots}", "", "| variant | dfwe validation wF1 | dfwe test wF1 | " +
                  " | ".join(f"{b} test" for b in BASELINES) + " |", "| --- " * (3 + len(BASELINES)) + "|"]
        for variant, by_k in table.items():
            if shots in by_k:
                s = by_k[shots]["summary"]
                lines.append(f"| {variant} | {cell(s, 'dfwe', 'validation')} | {cell(s, 'dfwe', 'test')} | " +
                             " | ".join(cell(s, b, "test") for b in BASELINES) + " |")
        lines.append("")
    (args.out / "protocol.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
