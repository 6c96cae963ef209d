"""How the demo's config is chosen: variants of ``configs/demo.yaml`` run on seeds 0-2 and compared on the
demo suite's **validation** split only (the synthetic ``dev.jsonl``, never used by a run for a choice). Test
scores are not printed: they are for ``docs/results.md`` once the config is chosen.

    python benchmarks/demo_variants.py --out runs/demo-variants --json benchmarks/results/demo_variants.json

Per variant and seed: dfwe's validation weighted F1, the strongest baseline there, dfwe − it (paired 95%
interval over the validation examples), the baselines dfwe loses to, and the mean largest weight. The goal
(issue 10): dfwe at or above every baseline within the paired interval on all three seeds. Writes JSON;
asserts nothing.
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
from dfwe.config import demo_config_path, load_config  # noqa: E402

# Configurations compared, each as overrides of the shipped demo config. "earlier" is the config shipped before
# this round (2,000 pretraining steps, search from the greedy soup); the others change it one or two ways.
EARLIER = {"model.tiny.pretrain_steps": 2000, "search.init": "greedy"}
VARIANTS: dict[str, dict[str, Any]] = {
    "earlier": EARLIER,
    "earlier, experts lr 3e-4": {**EARLIER, "experts.train.lr": 3e-4},
    "earlier, wider base": {**EARLIER, "model.tiny.hidden_size": 128, "model.tiny.intermediate_size": 256,
                            "model.tiny.num_heads": 4},
    "earlier, 4,000 pretraining steps": {"search.init": "greedy"},
    "4,000 pretraining steps, experts lr 3e-4": {"search.init": "greedy", "experts.train.lr": 3e-4},
    "shipped: 4,000 pretraining steps, uniform start": {},
}
METRIC = "weighted_f1"


def seed_row(results: dict) -> dict[str, Any]:
    """dfwe against every other method on the validation split of one seed."""
    methods, paired = results["methods"], results["paired"]["validation"]
    baselines = [m for m in paired if m != "dfwe"]
    strongest = max(baselines, key=lambda m: methods[m]["validation"][METRIC])
    return {"dfwe": methods["dfwe"]["validation"][METRIC], "strongest": strongest,
            "strongest_score": methods[strongest]["validation"][METRIC],
            "minus_strongest": paired[strongest][METRIC]["diff"], "ci": paired[strongest][METRIC]["ci"],
            "loses_to": [m for m in baselines if paired[m][METRIC]["verdict"] == "loses"],
            "max_weight": float(np.max(methods["dfwe"]["weights"], axis=1).mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="applies to every variant")
    parser.add_argument("--json", type=Path, help="default: OUT/variants.json")
    args = parser.parse_args()
    common = parse_overrides(args.set)
    json_path = args.json or args.out / "variants.json"
    table: dict[str, Any] = json.loads(json_path.read_text()) if json_path.is_file() else {}
    for variant in args.variants:
        overrides = {**common, "eval.validation": True, **VARIANTS[variant]}
        began = time.perf_counter()
        out = args.out / variant.split(":")[0].replace(", ", "+").replace(",", "").replace(" ", "-")
        run_bench(load_config(demo_config_path(), overrides), args.seeds, out, resume=True, cache=args.out / "cache")
        rows = {str(s): seed_row(json.loads((out / "seeds" / str(s) / "results.json").read_text()))
                for s in args.seeds}
        table[variant] = {"overrides": VARIANTS[variant], "seconds": time.perf_counter() - began, "seeds": rows}
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(table, indent=2))
        for s, r in rows.items():
            print(f"{variant:20s} seed {s}: dfwe {r['dfwe']:.3f}  vs {r['strongest']} {r['minus_strongest']:+.3f} "
                  f"[{r['ci'][0]:+.3f}, {r['ci'][1]:+.3f}]  loses to {r['loses_to'] or 'none'}  "
                  f"max weight {r['max_weight']:.2f}", flush=True)
    print("\n| configuration | dfwe validation wF1, mean over seeds | seeds where dfwe loses to a baseline |\n"
          "| --- | --- | --- |")
    for variant, entry in table.items():
        mean_dfwe = np.mean([r["dfwe"] for r in entry["seeds"].values()])
        losing = [f"{s} ({', '.join(r['loses_to'])})" for s, r in entry["seeds"].items() if r["loses_to"]]
        print(f"| {variant} | {mean_dfwe:.3f} | {'; '.join(losing) or 'none'} |")


if __name__ == "__main__":
    main()
