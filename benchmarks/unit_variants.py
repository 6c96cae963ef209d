"""Issue 20: a variant's FETA-Friends units beside the reference's, target by target, read on validation.

A round that changes only the merge or the search (``--set merge.head=average``, say) reruns the suite from the
reference's cache, so both unit sets hold the same ingredients, ``base-ft`` and ``multitask-ft`` (checked: their
test predictions must be equal) and differ only in the merged models. A round that changes the experts (``--set
experts.pooling=...``) retrains the multitask expert too: ``--retrained multitask-ft`` lets that model differ and
reads it from each set, and ``base-ft``, which no expert touches, must still be equal (unless the variant ran on
another machine, whose arithmetic moves a few predictions: ``--retrained base-ft multitask-ft`` then reads both from
each set and prints how far ``base-ft`` moved). For every (target, seed) both finished: the headline metric of dfwe
and of the two soups in each set on validation and test, and the means over units and per seed (validation chooses;
test is printed beside it; a variant adopted on one seed's validation is read afresh on the other seeds). Then, on
test, pooled paired intervals over every seed of every target (``feta_friends.py``'s:
each target's examples resampled, the targets averaged draw by draw): the variant's dfwe minus the reference's dfwe,
minus the reference's soups (a variant that changes the soups' head too must still beat the soups as the reference
scored them), and minus the variant's own ``multitask-ft`` (issue 20's margin), and each retrained model minus the
reference's. Asserts nothing.

    python benchmarks/unit_variants.py --reference benchmarks/results/feta_friends_v6 \\
        --variant benchmarks/results/feta_friends_v7 --suite ../shared/data/feta_friends \\
        --json benchmarks/results/unit_variants_v7.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from feta_friends import held_out_examples, read_units, unit_stats  # noqa: E402

from dfwe.io import atomic_write_json  # noqa: E402
from dfwe.stats import MetricStats, difference_summary, resampled_difference  # noqa: E402

MERGES = ("dfwe", "uniform-soup", "greedy-soup")
SINGLES = ("base-ft", "multitask-ft")  # the single models a variant reads back unless told it retrained them
# ((set, method), (set, method)) pairs whose test differences are pooled: the first minus the second
DIFFERENCES = ((("variant", "dfwe"), ("reference", "dfwe")), (("variant", "dfwe"), ("reference", "uniform-soup")),
               (("variant", "dfwe"), ("reference", "greedy-soup")), (("variant", "dfwe"), ("variant", "multitask-ft")),
               (("variant", "uniform-soup"), ("reference", "uniform-soup")))


def differences_for(retrained: tuple[str, ...]) -> tuple[tuple[tuple[str, str], tuple[str, str]], ...]:
    """:data:`DIFFERENCES`, and each retrained model against the reference's."""
    return DIFFERENCES + tuple((("variant", name), ("reference", name)) for name in retrained)


def paired_units(reference: list[Path], variant: list[Path], retrained: tuple[str, ...] = ()
                 ) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(reference unit, variant unit) for every target and seed both sets hold, refusing pairs that do not share
    the single fine-tuned models the variant was not told to have retrained."""
    ours, theirs = read_units(reference), read_units(variant)
    pairs = []
    for target in sorted(theirs):
        for seed in sorted(theirs[target]):
            if seed not in ours.get(target, {}):
                continue
            a, b = ours[target][seed], theirs[target][seed]
            if a["predictions"]["ids"] != b["predictions"]["ids"]:
                raise SystemExit(f"{target} seed {seed}: the two units score different test examples")
            for name in SINGLES:
                if name not in retrained and a["predictions"]["methods"][name] != b["predictions"]["methods"][name]:
                    raise SystemExit(f"{target} seed {seed}: {name} differs between the sets; the variant "
                                     "retrained it (name it in --retrained if it was meant to)")
            pairs.append((a, b))
    if not pairs:
        raise SystemExit("no target and seed is in both unit sets")
    return pairs


def unit_row(reference: dict[str, Any], variant: dict[str, Any], retrained: tuple[str, ...] = ()
             ) -> dict[str, Any]:
    """Headline metric of each merge and retrained model in both sets, and of the shared models, on validation and
    test."""
    own = (*MERGES, *retrained)
    metric = reference["task"]["metric"]
    row: dict[str, Any] = {"target": reference["target"], "seed": reference["seed"], "metric": metric,
                           "kept": {"reference": reference["search"].get("kept", "search"),
                                    "variant": variant["search"].get("kept", "search")}}
    for split in ("validation", "test"):
        row[split] = {**{f"{name} (reference)": reference["methods"][name][split][metric] for name in own},
                      **{f"{name} (variant)": variant["methods"][name][split][metric] for name in own},
                      **{name: reference["methods"][name][split][metric] for name in SINGLES
                         if name not in retrained}}
    return row


def split_means(rows: list[dict[str, Any]], columns: list[str]) -> dict[str, dict[str, float]]:
    """Each column's mean over ``rows``, on validation and on test."""
    return {split: {column: float(np.mean([r[split][column] for r in rows])) for column in columns}
            for split in ("validation", "test")}


def means_by_seed(rows: list[dict[str, Any]], columns: list[str]) -> dict[str, dict[str, dict[str, float]]]:
    """:func:`split_means` per seed: a variant adopted on one seed's validation is read afresh on the others."""
    seeds = sorted({r["seed"] for r in rows})
    return {str(seed): split_means([r for r in rows if r["seed"] == seed], columns) for seed in seeds}


def pooled_differences(suite: Path, pairs: list[tuple[dict[str, Any], dict[str, Any]]], resamples: int,
                       differences: tuple[tuple[tuple[str, str], tuple[str, str]], ...] = DIFFERENCES
                       ) -> dict[str, dict]:
    """Each difference on test, averaged over targets with a pooled paired interval."""
    by_target: dict[str, list[dict[str, dict[str, MetricStats]]]] = {}
    metrics = {}
    for reference, variant in pairs:
        task, examples = held_out_examples(suite, reference)
        metrics[reference["target"]] = task.metric
        by_target.setdefault(reference["target"], []).append({"reference": unit_stats(task, examples, reference),
                                                              "variant": unit_stats(task, examples, variant)})
    result = {}
    for (left, ours), (right, theirs) in differences:
        per_seed, draws = [], []
        for index, (target, units) in enumerate(sorted(by_target.items())):
            diffs, resampled = resampled_difference([(u[left][ours], u[right][theirs]) for u in units],
                                                    resamples, index)
            per_seed.append(np.mean(diffs[metrics[target]]))
            draws.append(resampled[metrics[target]])
        summary = difference_summary(per_seed, np.mean(draws, axis=0))
        summary["per_target"] = dict(zip(sorted(by_target), summary.pop("per_seed")))
        result[f"{left} {ours} - {right} {theirs}"] = summary
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, nargs="+", required=True, help="unit folders, later ones win")
    parser.add_argument("--variant", type=Path, nargs="+", required=True)
    parser.add_argument("--suite", type=Path, default=Path("../shared/data/feta_friends"))
    parser.add_argument("--retrained", nargs="*", choices=SINGLES, default=[],
                        help="single models the variant retrained: a change to the experts retrains multitask-ft; "
                             "base-ft too where the variant ran on another machine, whose floating point differs")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()

    retrained = tuple(args.retrained)
    pairs = paired_units(args.reference, args.variant, retrained)
    rows = [unit_row(a, b, retrained) for a, b in pairs]
    own = (*MERGES, *retrained)
    columns = [*(f"{name} (reference)" for name in own), *(f"{name} (variant)" for name in own),
               *(name for name in SINGLES if name not in retrained)]
    means, by_seed = split_means(rows, columns), means_by_seed(rows, columns)
    print("| target | seed | kept (reference → variant) | dfwe validation | dfwe test | uniform soup validation |")
    print("| --- | ---: | --- | ---: | ---: | ---: |")
    for r in rows:
        v, t = r["validation"], r["test"]
        print(f"| {r['target']} | {r['seed']} | {r['kept']['reference']} → {r['kept']['variant']} | "
              f"{v['dfwe (reference)']:.3f} → {v['dfwe (variant)']:.3f} | {t['dfwe (reference)']:.3f} → "
              f"{t['dfwe (variant)']:.3f} | {v['uniform-soup (reference)']:.3f} → {v['uniform-soup (variant)']:.3f} |")
    print(f"\nmean over {len(rows)} units:")
    for split in ("validation", "test"):
        print(f"  {split:10s} " + ", ".join(f"{c} {means[split][c]:.4f}" for c in columns))
    print("\ndfwe per seed, reference → variant (units | validation | test):")
    for seed, m in by_seed.items():
        units = sum(r["seed"] == int(seed) for r in rows)
        print(f"  seed {seed}: {units} units | " + " | ".join(f"{m[split]['dfwe (reference)']:.4f} → "
                                                            f"{m[split]['dfwe (variant)']:.4f}"
                                                            for split in ("validation", "test")))
    differences = pooled_differences(args.suite, pairs, args.resamples, differences_for(retrained))
    print("\ntest, averaged over targets (pooled paired 95% interval):")
    for name, d in differences.items():
        print(f"  {name:45s} {d['mean']:+.4f} [{d['ci'][0]:+.4f}, {d['ci'][1]:+.4f}] {d['verdict']}")
    atomic_write_json(args.json, {"reference": [str(p) for p in args.reference],
                                  "variant": [str(p) for p in args.variant], "retrained": list(retrained),
                                  "rows": rows,
                                  "mean_over_units": means, "mean_by_seed": by_seed,
                                  "test_differences": differences})


if __name__ == "__main__":
    main()
