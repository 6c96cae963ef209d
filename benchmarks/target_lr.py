"""Issue 20: the target fine-tune's learning rate on a one-layer trunk, read on validation.

The suite's target recipe (lr 5e-5, four epochs, the best epoch by calibrated dev loss) was carried over from
full fine-tuning; on a one-layer trunk the experts needed ten times the lr to learn (docs/results.md, issue 19).
This trains ``base-ft`` alone (the pretrained model from the shared probe, as the suite's recipe does) at each
``--lrs`` value, from ``--cache`` (the trunk states and the reference ingredient are read back), and scores it
with its own head on the few-sample dev set (what the recipe's epoch choice sees: calibrated loss), on
validation and on test. A recipe is chosen on validation, never on test; test is printed beside it. Asserts
nothing.

    python benchmarks/target_lr.py --suite ../shared/data/feta_friends --cache runs/cache-v2 --seed 0 \\
        --targets personality_detection emory_emotion_recognition --lrs 5e-5 2e-4 5e-4 \\
        --json benchmarks/results/target_lr.json
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from refit_single import suite_parser, target_configs  # noqa: E402  (the diagnostic beside this one)

from dfwe.config import RunConfig  # noqa: E402
from dfwe.data.metrics import score  # noqa: E402
from dfwe.io import atomic_write_json  # noqa: E402
from dfwe.merge.fold import FoldSpec  # noqa: E402
from dfwe.pipeline import trunk_inputs  # noqa: E402
from dfwe.runtime import resolve_device, torch_threads  # noqa: E402
from dfwe.train.target import fine_tune_ingredients  # noqa: E402

SPLITS = ("dev", "validation", "test")


def base_ft_rows(config: RunConfig, cache: Path, lrs: list[float]) -> dict[str, Any]:
    """``base-ft`` trained at each lr: the epoch kept, seconds, and its scores on dev, validation and test."""
    device = resolve_device(config.runtime.device)
    base, data, depth = trunk_inputs(config, cache, device)
    sets = {"dev": data.dev, "validation": data.validation, "test": data.test}
    metric, rows = data.target.metric, {}
    for lr in lrs:
        target = config.target.model_copy(update={"train": config.target.train.model_copy(update={"lr": lr})})
        began = time.perf_counter()
        ingredients = fine_tune_ingredients(target, base, data.train, data.dev, {}, config.seed, device,
                                            cache / "ingredients", data.prep)
        seconds = time.perf_counter() - began
        fold = FoldSpec((ingredients.folders[0],), data.dev, None, config.runtime.device, None, depth).build()
        fold.merge("linear", np.ones((1, 1)), refit=False)  # a single model's merge is itself, its own head
        scores = {split: score(fold.logits(examples), examples) for split, examples in sets.items()}
        rows[f"{lr:g}"] = {"seconds": seconds, "recipe": ingredients.items[0].recipe,
                           **{split: {metric: s[metric], "calibrated_loss": s["calibrated_loss"]}
                              for split, s in scores.items()}}
        print(f"{config.data.target:28s} lr {lr:<8g} dev {scores['dev'][metric]:.3f} "
              f"(calibrated loss {scores['dev']['calibrated_loss']:.4f})  validation {scores['validation'][metric]:.3f}"
              f"  test {scores['test'][metric]:.3f}  {seconds:.0f} s", flush=True)
    return {"metric": metric, "lrs": rows}


def print_means(targets: dict[str, Any], lrs: list[str]) -> None:
    """The mean over targets of each lr's headline metric, per split (targets that ran every lr)."""
    print(f"\n| lr | {' | '.join(SPLITS)} |\n| --- |{' ---: |' * len(SPLITS)}")
    for lr in lrs:
        means = [statistics.mean(t["lrs"][lr][split][t["metric"]] for t in targets.values()) for split in SPLITS]
        print(f"| {lr} | {' | '.join(f'{m:.3f}' for m in means)} |")


def main() -> None:
    parser = suite_parser(__doc__.splitlines()[0])
    parser.add_argument("--lrs", type=float, nargs="+", default=[5e-5, 2e-4, 5e-4])
    args = parser.parse_args()
    configs, overrides = target_configs(args)
    result: dict[str, Any] = {"seed": args.seed, "settings": {k: str(v) for k, v in overrides.items()}, "targets": {}}
    with torch_threads(next(iter(configs.values())).runtime.threads):
        for target, target_config in configs.items():
            result["targets"][target] = base_ft_rows(target_config, args.cache, args.lrs)
            if args.json:  # after every target: a partial run is readable
                atomic_write_json(args.json, result)
    print_means(result["targets"], [f"{lr:g}" for lr in args.lrs])


if __name__ == "__main__":
    main()
