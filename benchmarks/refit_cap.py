"""What capping a refit's L-BFGS iterations (``merge.refit_iterations``) saves and changes, on a finished run.

Each merged model of a suite run (the uniform soup and dfwe's searched weights, read from the run's
``results.json``) gets its head refitted on the target's train features at the run's C, once with each cap; per cap
the seconds of the refit (the merged body's train features included), the head's loss evaluations, and dev,
validation and test scores of the merge. Ingredients are read from ``--cache`` (run the suite first); nothing
chooses on validation or test here. Asserts nothing.

    python benchmarks/refit_cap.py --run runs/feta-v2-s0 --cache runs/cache-v2 --seed 0 \\
        --targets question_answering relation_extraction --caps 500 50 --json benchmarks/results/refit_cap.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from dfwe.config import config_from_dict  # noqa: E402
from dfwe.data.metrics import score  # noqa: E402
from dfwe.eval.baselines import uniform_weights  # noqa: E402
from dfwe.io import atomic_write_json  # noqa: E402
from dfwe.merge.fold import DevFold, HeadRefit  # noqa: E402
from dfwe.pipeline import trained_stages  # noqa: E402
from dfwe.runtime import torch_threads  # noqa: E402


def refit_once(fold: DevFold, weights: np.ndarray, refit: HeadRefit) -> tuple[float, int]:
    """Merge ``weights`` and refit the head as ``refit`` says: seconds, and the head's loss evaluations."""
    fold.refit = refit
    calls: list[int] = []
    hook = fold.model.head.register_forward_hook(lambda *_: calls.append(1))
    began = time.perf_counter()
    fold.merge("linear", weights)
    seconds = time.perf_counter() - began
    hook.remove()
    return seconds, len(calls)


def target_rows(results: dict, cache: Path, caps: list[int]) -> dict:
    stages = trained_stages(config_from_dict(results["config"], origin="the run's results.json"), cache)
    config, data, ingredients, fold = stages.config, stages.data, stages.ingredients, stages.dev_fold()
    train = fold.refit.train
    merges = {"uniform-soup": uniform_weights(len(ingredients.items)),
              "dfwe": np.asarray(results["methods"]["dfwe"]["weights"])}
    splits = {"dev": data.dev, "validation": data.validation, "test": data.test}
    rows = {}
    for name, weights in merges.items():
        for cap in caps:
            seconds, evaluations = refit_once(fold, weights, HeadRefit(train, config.merge.probe_c, cap))
            scores = {split: score(fold.logits(examples), examples) for split, examples in splits.items()}
            rows[f"{name} cap {cap}"] = {"seconds": seconds, "loss_evaluations": evaluations, **scores}
            print(f"{config.data.target:26s} {name:13s} cap {cap:4d}: {seconds:6.1f} s, {evaluations:4d} evaluations, "
                  + "  ".join(f"{split} {s[data.target.metric]:.4f}" for split, s in scores.items()), flush=True)
    return {"metric": data.target.metric, "train_rows": len(train.encoded), "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a dfwe bench --suite folder")
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--targets", nargs="+", required=True)
    parser.add_argument("--caps", type=int, nargs="+", default=[500, 50])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = {"run": str(args.run), "seed": args.seed, "caps": args.caps, "targets": {}}
    for target in args.targets:
        results = json.loads((args.run / "targets" / target / "seeds" / str(args.seed) / "results.json").read_text())
        with torch_threads(results["config"]["runtime"]["threads"]):
            result["targets"][target] = target_rows(results, args.cache, args.caps)
    if args.json:
        atomic_write_json(args.json, result)


if __name__ == "__main__":
    main()
