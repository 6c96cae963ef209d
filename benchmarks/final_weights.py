"""Which weights a search keeps: its single best candidate on dev, the mean of its best few, or the best shrunk
towards uniform weights?

A search scores its candidates on a few-sample dev set, and the best of 40 noisy scores is partly the best noise:
its winner overfits dev (issue 20: the searched weights land on a different ingredient every seed). Averaging the
weights of the k best candidates keeps what they agree on; shrinking the winner towards uniform weights keeps part
of the soup that dev cannot rank; Breiman's one-standard-error rule (``1se``) keeps, of the candidates within one
standard error (of the best candidate's per-row calibrated dev loss) of the best objective, the one closest to
uniform weights. For every finished target and seed of a suite run, each rule's weights (``best``,
the run's own; ``top-k``, the mean weights of the k candidates with the lowest objective; ``shrink-s``,
``(1 - s) best + s uniform``) are merged, their head refit as the run does, and scored on dev, validation and
test beside the uniform soup and ``base-ft``; each rule minus ``best``, ``base-ft`` and the uniform soup with a
paired bootstrap interval on validation (what chooses a rule) and test (reported). Ingredients are read from
``--cache``. Asserts nothing.

    python benchmarks/final_weights.py --run runs/feta-v2-s0 --cache runs/cache-v2 --seed 0 --ks 3 5 10 \\
        --shrinks 0.5 --json benchmarks/results/final_weights.json
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from refit_cap import run_fold  # noqa: E402  (the benchmark beside this one)

from dfwe.data.metrics import metric_stats, score, temperature_fit  # noqa: E402
from dfwe.data.sets import ExampleSet  # noqa: E402
from dfwe.eval.baselines import uniform_weights  # noqa: E402
from dfwe.io import atomic_write_json  # noqa: E402
from dfwe.merge.fold import DevFold  # noqa: E402
from dfwe.runtime import torch_threads  # noqa: E402
from dfwe.stats import MetricStats, paired_difference  # noqa: E402
from dfwe.train.target import BASE_FT  # noqa: E402

HELD_OUT = ("validation", "test")


def journal_weights(journal: Path) -> list[tuple[float, np.ndarray]]:
    """(objective, weights) of every full-fidelity candidate, in the order they were scored."""
    with sqlite3.connect(f"file:{journal}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT objective, weights FROM candidates WHERE fidelity >= 1 ORDER BY idx").fetchall()
    return [(objective, np.atleast_2d(np.array(json.loads(weights)))) for objective, weights in rows]


def row_losses(logits: np.ndarray, examples: ExampleSet) -> np.ndarray:
    """Each dev row's loss at the temperature that minimises the set's loss (the calibrated loss, row by row)."""
    temperature, _ = temperature_fit(logits, examples)
    shape, encoded, scaled = examples.shape, examples.encoded, torch.as_tensor(logits / temperature)
    return np.array([float(shape.loss(scaled[i:i + 1], encoded.labels[i:i + 1])) for i in range(len(encoded))])


def score_merge(fold: DevFold, weights: np.ndarray, refit: bool, splits: dict[str, ExampleSet], metric: str
                ) -> tuple[dict[str, float], dict[str, MetricStats], np.ndarray]:
    """Merge ``weights`` (refitting the head if ``refit``) and score it: the headline metric and per-example
    statistics per split, and the dev logits."""
    fold.merge("linear", weights, refit=refit)
    scores, stats, dev_logits = {}, {}, None
    for split, examples in splits.items():
        logits = fold.logits(examples)
        stats[split] = metric_stats(logits, examples)
        scores[split] = score(logits, examples, stats[split])[metric]
        dev_logits = logits if split == "dev" else dev_logits
    return scores, stats, dev_logits


def one_standard_error(candidates: list[tuple[float, np.ndarray]], standard_error: float) -> np.ndarray:
    """Breiman's one-standard-error rule: of the candidates within one standard error of the best objective, the
    one closest to uniform weights (the most averaging)."""
    best = min(objective for objective, _ in candidates)
    near = [weights for objective, weights in candidates if objective <= best + standard_error]
    return min(near, key=lambda w: float(((w - 1.0 / w.shape[1]) ** 2).sum()))


def rule_weights(candidates: list[tuple[float, np.ndarray]], ks: list[int], shrinks: list[float]
                 ) -> dict[str, np.ndarray]:
    """``best`` (lowest objective, earliest on ties, as the search keeps it), the mean of the ``k`` best, and
    ``best`` shrunk towards uniform weights by each of ``shrinks``."""
    order = sorted(range(len(candidates)), key=lambda i: (candidates[i][0], i))
    best = candidates[order[0]][1]
    rules = {"best": best}
    for k in ks:
        rules[f"top-{k}"] = np.mean([candidates[i][1] for i in order[:k]], axis=0)
    for shrink in shrinks:
        rules[f"shrink-{shrink:g}"] = (1 - shrink) * best + shrink * uniform_weights(best.shape[1])
    return rules


def target_rows(seed_dir: Path, cache: Path, ks: list[int], shrinks: list[float], resamples: int) -> dict:
    results = json.loads((seed_dir / "results.json").read_text())
    config, data, ingredients, fold = run_fold(results, cache)
    metric = data.target.metric
    splits = {"dev": data.dev, "validation": data.validation, "test": data.test}
    count = len(ingredients.items)
    candidates = journal_weights(seed_dir / "journal.sqlite")
    rules = rule_weights(candidates, ks, shrinks)
    models = {BASE_FT: (np.eye(count)[ingredients.names.index(BASE_FT)][None], False),
              "uniform-soup": (uniform_weights(count)[None], True), **{rule: (w, True) for rule, w in rules.items()}}
    scored = {name: score_merge(fold, weights, refit, splits, metric) for name, (weights, refit) in models.items()}
    # the one-standard-error margin: the standard error of the best candidate's per-row calibrated dev loss
    dev_losses = row_losses(scored["best"][2], data.dev)
    standard_error = float(dev_losses.std(ddof=1) / np.sqrt(len(dev_losses)))
    models["1se"] = (one_standard_error(candidates, standard_error), True)
    scored["1se"] = score_merge(fold, *models["1se"], splits, metric)
    scores, stats = {name: s[0] for name, s in scored.items()}, {name: s[1] for name, s in scored.items()}
    for name, split_scores in scores.items():
        print(f"{data.target.name:26s} seed {config.seed} {name:13s} "
              + "  ".join(f"{split} {value:.4f}" for split, value in split_scores.items()), flush=True)
    minus = {rule: {against: {split: paired_difference(stats[rule][split], stats[against][split], resamples,
                                                       config.seed)[metric] for split in HELD_OUT}
                    for against in ("best", BASE_FT, "uniform-soup") if against != rule}
             for rule in [*rules, "1se"]}
    largest = {rule: float(np.max(np.mean(models[rule][0], axis=0))) for rule in [*rules, "1se"]}
    return {"metric": metric, "scores": scores, "minus": minus, "largest_weight": largest,
            "dev_standard_error": standard_error}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a dfwe bench --suite folder")
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--targets", nargs="+", help="default: every target the run finished for --seed")
    parser.add_argument("--ks", type=int, nargs="+", default=[3, 5, 10])
    parser.add_argument("--shrinks", type=float, nargs="+", default=[0.5], help="best mixed with uniform weights")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    seed_dirs = {d.parents[1].name: d for d in sorted(args.run.glob(f"targets/*/seeds/{args.seed}"))
                 if (d / "results.json").is_file() and (args.targets is None or d.parents[1].name in args.targets)}
    result = {"run": str(args.run), "seed": args.seed, "ks": args.ks, "targets": {}}
    for target, seed_dir in seed_dirs.items():
        with torch_threads(json.loads((seed_dir / "results.json").read_text())["config"]["runtime"]["threads"]):
            result["targets"][target] = target_rows(seed_dir, args.cache, args.ks, args.shrinks, args.bootstrap)
    rules = ["best", *(f"top-{k}" for k in args.ks), *(f"shrink-{s:g}" for s in args.shrinks), "1se"]
    print("\nmean over targets (validation / test):")
    for rule in rules:
        rows = result["targets"].values()
        cells = [f"{np.mean([r['scores'][rule][s] for r in rows]):.4f}" for s in HELD_OUT]
        gains = [f"{np.mean([r['minus'][rule][BASE_FT][s]['diff'] for r in rows]):+.4f}" for s in HELD_OUT]
        print(f"  {rule:8s} score {' / '.join(cells)}   minus base-ft {' / '.join(gains)}")
    result["mean"] = {rule: {split: float(np.mean([r["scores"][rule][split] for r in result["targets"].values()]))
                             for split in ("dev", *HELD_OUT)} for rule in [BASE_FT, "uniform-soup", *rules]}
    if args.json:
        atomic_write_json(args.json, result)


if __name__ == "__main__":
    main()
