"""Issue 20: how much of a merge's score is its refitted head? Each single ingredient scored with its own head
(the shared frozen probe its body learnt to feed) and with the head refitted on the target's train features at
inverse L2 strength C, as ``merge.head: refit`` does for every merge. A diagnostic beside
``benchmarks/feta_variants.py`` (the ``refit-c10`` round): if a single model gains as much from a C = 10 refit
as the merges do, the gain is the head's, not the merge's. Ingredients are read from ``--cache`` (run the suite
first); validation and test are scored, nothing chooses on them. Asserts nothing.

    python benchmarks/refit_single.py --suite ../shared/data/feta_friends --cache runs/cache --seed 2 \\
        --targets personality_detection emory_emotion_recognition --cs 1 10 \\
        --set model.trainable_layers=1 --set experts.train.lr=5e-4 --json benchmarks/results/refit_single.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from dfwe.bench import suite_target_config, suite_tasks  # noqa: E402
from dfwe.cli import parse_overrides  # noqa: E402
from dfwe.config import feta_config_path, load_config  # noqa: E402
from dfwe.data.metrics import score  # noqa: E402
from dfwe.io import atomic_write_json  # noqa: E402
from dfwe.merge.fold import FoldSpec, HeadRefit  # noqa: E402
from dfwe.pipeline import trained_stages  # noqa: E402
from dfwe.runtime import torch_threads  # noqa: E402
from dfwe.train.target import BASE_FT  # noqa: E402


def target_rows(config, cache: Path, ingredients_wanted: list[str], cs: list[float]) -> dict[str, dict]:
    """Every wanted ingredient's headline metric on validation and test, with its own head and refitted at each C."""
    stages = trained_stages(config, cache)
    data, depth, ingredients = stages.data, stages.depth, stages.ingredients
    metric = data.target.metric
    rows = {}
    for name, folder in zip(ingredients.names, ingredients.folders):
        if name not in ingredients_wanted:
            continue
        row = {}
        fold = FoldSpec((folder,), data.dev, None, config.runtime.device, HeadRefit(data.train), depth).build()
        for label, c in [("own head", None), *((f"refit C={c:g}", c) for c in cs)]:
            fold.refit = HeadRefit(data.train, c or fold.refit.c)
            # a single ingredient's merge is itself: with refit=False it keeps its own head (bit for bit)
            fold.merge("linear", np.ones((1, 1)), refit=c is not None)
            row[label] = {split: score(fold.logits(examples), examples)[metric]
                          for split, examples in (("validation", data.validation), ("test", data.test))}
            print(f"{config.data.target:28s} {name:28s} {label:12s} validation {row[label]['validation']:.3f} "
                  f"test {row[label]['test']:.3f}", flush=True)
        rows[name] = row
    return {"metric": metric, "ingredients": rows}


def suite_parser(description: str) -> argparse.ArgumentParser:
    """The arguments every seed-0-style FETA diagnostic here shares: suite, cache, seed, targets, --set, --json."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--suite", type=Path, default=Path("../shared/data/feta_friends"))
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--targets", nargs="+", required=True)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--json", type=Path)
    return parser


def target_configs(args: argparse.Namespace) -> tuple[dict, dict]:
    """The suite config (``--set``, the seed, validation on) per target of ``--targets``, and the overrides."""
    overrides = {**parse_overrides(args.set), "seed": args.seed, "eval.validation": True}
    config = load_config(feta_config_path(), overrides)
    tasks = suite_tasks(args.suite)
    return {target: suite_target_config(config, args.suite, target, [t for t in tasks if t != target])
            for target in args.targets}, overrides


def main() -> None:
    parser = suite_parser(__doc__.splitlines()[0])
    parser.add_argument("--ingredients", nargs="+", default=[BASE_FT])
    parser.add_argument("--cs", type=float, nargs="+", default=[1.0, 10.0])
    args = parser.parse_args()
    configs, overrides = target_configs(args)
    result = {"seed": args.seed, "settings": {k: str(v) for k, v in overrides.items()}, "targets": {}}
    with torch_threads(next(iter(configs.values())).runtime.threads):
        for target, target_config in configs.items():
            result["targets"][target] = target_rows(target_config, args.cache, args.ingredients, args.cs)
    if args.json:
        atomic_write_json(args.json, result)


if __name__ == "__main__":
    main()
