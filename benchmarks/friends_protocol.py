"""The Friends protocol and its ablation: ``dfwe bench`` at each k for the default config and for variants
that each change one option, all sharing one cache (experts are trained once; ingredients are shared by
variants that differ only downstream of them). Prints tables, writes JSON; asserts nothing.

    python benchmarks/friends_protocol.py --data-dir ../shared/data/friends --out runs/friends-protocol

Each variant row is reproduced on its own by
    dfwe bench --data-dir D --shots K --seeds 0 1 2 --out OUT --set KEY=VALUE ...   (the variant's overrides)

``--split dev`` scores on the official dev split instead of test: options are compared there while developing,
so that test data never steers a choice.
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
from dfwe.bench import run_bench  # noqa: E402
from dfwe.cli import parse_overrides  # noqa: E402
from dfwe.config import friends_config_path, load_config  # noqa: E402

# Each variant changes the default (configs/friends.yaml) in one respect: the ablation of docs/results.md.
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    # head scheme
    "merge head=average": {"merge.head": "average"},
    "head=shared (one frozen probe fitted on the base)": {"target.head": "shared", "target.train.freeze_head": True},
    # pooler and experts: these retrain every expert (or the two single ones) and their fine-tunes
    "pooling=cls": {"model.pooling": "cls"},
    "experts from multitask (ratatouille)": {"experts.start": "multitask"},
    "experts epochs=1 (gentler sources)": {"experts.train.epochs": 1},
    # search space and start
    "granularity=model (one weight per ingredient)": {"search.granularity": "model", "search.coarse_budget": 0,
                                                      "search.penalty": "none"},
    "granularity=kind": {"search.granularity": "kind"},
    "init=greedy": {"search.init": "greedy"},
    "cross-fitting": {"search.crossfit": True},
    # a frozen trunk (issue 19): only the top N of MiniLM's 6 layers train, on stored lower-layer states
    "trainable_layers=1": {"model.trainable_layers": 1},
    "trainable_layers=2": {"model.trainable_layers": 2},
    "trainable_layers=3": {"model.trainable_layers": 3},
    # the top layers alone learn slowly at full fine-tuning's expert lr (1e-4): a 5x larger one, judged on the
    # experts' own source-dev loss first
    "trainable_layers=1, experts lr=5e-4": {"model.trainable_layers": 1, "experts.train.lr": 5e-4},
    "trainable_layers=2, experts lr=5e-4": {"model.trainable_layers": 2, "experts.train.lr": 5e-4},
    # objective
    "objective=loss": {"search.objective": "loss"},
    "objective=weighted_f1": {"search.objective": "weighted_f1"},
}
BASELINES = ("multitask-ft", "best-expert-ft", "greedy-soup", "logit-ensemble")
SHOWN = ("base-ft", "uniform-soup", *BASELINES)


def cell(summary: dict, method: str, metric: str, split: str = "test") -> str:
    if split not in summary[method]:
        return "-"
    value = summary[method][split][metric]
    return f"{value['mean']:.3f} ± {value['std']:.3f}"


def mix(results: dict) -> float:
    """Mean over seeds of dfwe's mean-over-groups largest weight (1.0: one ingredient takes everything)."""
    return float(np.mean([np.max(seed["methods"]["dfwe"]["weights"], axis=1).mean() for seed in results["seeds"].values()]))


def row(variant: str, results: dict, metric: str) -> dict[str, Any]:
    summary, paired = results["summary"], results["paired"].get("test", {})
    strongest = max(BASELINES, key=lambda b: summary[b]["test"][metric]["mean"])
    versus = paired.get(strongest, {}).get(metric, {})
    return {"variant": variant, "dfwe": cell(summary, "dfwe", metric),
            "dfwe_validation": cell(summary, "dfwe", metric, "validation"), "strongest": strongest,
            "minus_strongest": versus.get("mean"), "ci": versus.get("ci"), "verdict": versus.get("verdict"),
            "max_weight": mix(results), **{m: cell(summary, m, metric) for m in SHOWN},
            # per seed, so that a variant can be set against the default seed by seed
            "dfwe_per_seed": {s: r["methods"]["dfwe"]["test"][metric] for s, r in results["seeds"].items()}}


def versus_default(r: dict[str, Any], default: dict[str, Any] | None) -> str:
    """dfwe of this variant minus dfwe of the default, mean ± sample std over the seeds both ran."""
    if default is None or r is default or "dfwe_per_seed" not in default:
        return "-"
    seeds = sorted(set(r.get("dfwe_per_seed", {})) & set(default["dfwe_per_seed"]))
    diffs = [r["dfwe_per_seed"][s] - default["dfwe_per_seed"][s] for s in seeds]
    if not diffs:
        return "-"
    spread = float(np.std(diffs, ddof=1)) if len(diffs) > 1 else 0.0
    return f"{np.mean(diffs):+.3f} ± {spread:.3f}"


def table(rows: list[dict[str, Any]], split: str) -> str:
    default = next((r for r in rows if r["variant"] == "default"), None)
    lines = [f"| variant | dfwe {split} | dfwe − default dfwe (per seed) | dfwe validation | strongest baseline | "
             "dfwe − strongest (pooled paired 95% CI) | verdict | mean max weight | " + " | ".join(SHOWN) + " |",
             "| --- " * (8 + len(SHOWN)) + "|"]
    for r in rows:
        diff = f"{r['minus_strongest']:+.3f} [{r['ci'][0]:+.3f}, {r['ci'][1]:+.3f}]" if r["ci"] else "-"
        lines.append(f"| {r['variant']} | {r['dfwe']} | {versus_default(r, default)} | "
                     f"{r.get('dfwe_validation', '-')} | {r['strongest']} | {diff} | "
                     f"{r['verdict']} | {r['max_weight']:.2f} | " + " | ".join(r[m] for m in SHOWN) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data/friends"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--shots", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=["default"], choices=list(VARIANTS))
    parser.add_argument("--split", default="test", choices=["test", "dev"],
                        help="held-out split scored (dev while choosing options)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="applies to every variant (e.g. a reduced CPU protocol)")
    parser.add_argument("--cache", type=Path, help="experts, ingredients and outputs shared by every variant "
                                                    "(default: OUT/cache)")
    parser.add_argument("--deadline", type=float, default=None, help="skip variants that start after this many s")
    args = parser.parse_args()
    common = parse_overrides(args.set)
    start = time.perf_counter()
    # rows of earlier invocations stay: variants run in separate invocations (and sessions) build one table
    protocol_json = args.out / "protocol.json"
    rows: dict[str, list[dict[str, Any]]] = json.loads(protocol_json.read_text()) if protocol_json.is_file() else {}
    for shots in args.shots:
        for variant in args.variants:
            if args.deadline and time.perf_counter() - start > args.deadline:
                print(f"skipping {variant} k={shots}: past the deadline", flush=True)
                continue
            overrides = {**common, "data.data_dir": str(args.data_dir), "data.shots": shots,
                         "eval.split": args.split, **VARIANTS[variant]}
            config = load_config(friends_config_path(), overrides)
            out = args.out / f"k{shots}" / variant.split(" (")[0].replace("=", "-").replace(" ", "-").replace(",", "")
            began = time.perf_counter()
            results = run_bench(config, args.seeds, out, resume=True, cache=args.cache or args.out / "cache")
            entry = row(variant, results, results["task"]["metric"])
            entry.update(seconds=time.perf_counter() - began, overrides={**common, **VARIANTS[variant]})
            kept = [r for r in rows.get(str(shots), []) if r["variant"] != variant]
            rows[str(shots)] = [*kept, entry]
            print(f"k={shots:2d} {variant:40s} dfwe {entry['dfwe']}  vs {entry['strongest']} "
                  f"{entry['minus_strongest']:+.3f} {entry['verdict']}  max weight {entry['max_weight']:.2f} "
                  f"({entry['seconds']:.0f}s)", flush=True)
            protocol_json.write_text(json.dumps(rows, indent=2))
    lines = []
    for shots, entries in rows.items():
        lines += [f"### k = {shots} ({args.split} split)", "", table(entries, args.split), ""]
    (args.out / "protocol.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
