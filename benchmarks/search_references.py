"""Round 5 of issue 20: the search also scores the soups it is compared with, and keeps the best on dev.

Since this round ``dfwe.search.run.run_search`` scores, after its budget, the uniform and the greedy soup as two
more candidates (not told to the optimiser) and returns the best of every candidate on the dev objective, the
earliest on ties: the search can no longer end worse on its own objective than a baseline it could have scored.
A finished run's unit already holds all three dev objectives (the search's best is dfwe's dev score, the soups
are scored by the same fold), so this script replays the rule on committed units without retraining or
re-searching: dfwe becomes the uniform or the greedy soup where that soup's dev objective is strictly lower than
the search's best, and stays as it was otherwise (a unit from v6 code on, whose run already applied the rule,
comes back unchanged). It prints, per unit, which point wins and dfwe's headline metric on validation and test
before and after, with the means over units, and writes the replayed units (the unit schema, ``search.kept``
naming the point kept) for ``feta_friends.py table``; a unit already in ``--out`` is kept unless ``--overwrite``.
Asserts nothing.

    python benchmarks/search_references.py --units benchmarks/results/feta_friends_v3 \\
        benchmarks/results/feta_friends_v4 benchmarks/results/feta_friends_v5 \\
        --out benchmarks/results/feta_friends_v6 --json benchmarks/results/search_references.json

(a later ``--units`` folder's unit of a target and seed replaces an earlier one's, as in ``feta_friends.py``).

``--pool models`` replays a wider rule that was not adopted (round 6): every model the run scores is a candidate,
each single fine-tuned ingredient too (a one-hot weighting with the head it was trained with), so dfwe would be
the model with the lowest dev objective of all.

    python benchmarks/search_references.py --units benchmarks/results/feta_friends_v6 --pool models \\
        --json benchmarks/results/search_references_models.json
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from feta_friends import read_units, write_unit  # noqa: E402

from dfwe.io import atomic_write_json  # noqa: E402
from dfwe.stats import LOWER_IS_BETTER  # noqa: E402

REFERENCES = ("uniform-soup", "greedy-soup")  # in the order the search scores them, after its own candidates


def pool_of(unit: dict[str, Any], pool: str) -> tuple[str, ...]:
    """The points dfwe may become besides the search's own: the two soups, or (``models``) also every ingredient."""
    return REFERENCES if pool == "soups" else (*REFERENCES, *unit["ingredients"])


def run_kept(unit: dict[str, Any]) -> str:
    """The point the unit's dfwe is: ``search``, or the soup a run from v6 code on kept (earlier units name none)."""
    return unit["search"].get("kept", "search")


def kept_point(unit: dict[str, Any], pool: str = "soups") -> str:
    """The point dfwe keeps, named as ``results.json``'s ``search.kept`` names it: the point of ``pool`` whose dev
    objective is strictly lower than dfwe's (the earliest of the pool on ties), or else the point the unit's
    dfwe already is (``search``, or the soup a v6 run kept)."""
    search = unit["config"]["search"]
    if search.get("objective_weights") or search.get("penalty", "none") != "none":
        raise SystemExit(f"{unit['target']} seed {unit['seed']}: a mixed or penalised objective is not a method's "
                         "dev score, so it cannot be replayed from the unit")
    objective = search["objective"]
    sign = 1.0 if objective in LOWER_IS_BETTER else -1.0
    points = ("dfwe", *pool_of(unit, pool))
    dev = {name: sign * unit["methods"][name]["dev"][objective] for name in points}
    if not np.isclose(dev["dfwe"], sign * unit["search"]["best_objective"], rtol=0, atol=1e-9):
        raise SystemExit(f"{unit['target']} seed {unit['seed']}: dfwe's dev {objective} is not the search's best "
                         "objective; the unit does not come from one search")
    best = min(dev, key=lambda name: (dev[name], points.index(name)))
    return run_kept(unit) if best == "dfwe" else best


def replayed(unit: dict[str, Any], kept: str) -> dict[str, Any]:
    """The unit with dfwe's scores, predictions and weights those of ``kept`` (a soup or a single ingredient)."""
    out = copy.deepcopy(unit)
    if kept == run_kept(unit):
        return out
    out["search"]["kept"] = kept
    point = unit["methods"][kept]
    weights = np.atleast_2d(point["weights"]).tolist()  # dfwe's are [groups, ingredients], a soup's one row
    out["methods"]["dfwe"].update({key: copy.deepcopy(point[key]) for key in ("dev", "validation", "test", "test_ci")
                                   if key in point}, weights=weights)
    out["predictions"]["methods"]["dfwe"] = unit["predictions"]["methods"][kept]
    out["search"]["best_weights"] = weights
    out["search"]["best_objective"] = unit["methods"][kept]["dev"][unit["config"]["search"]["objective"]]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=Path, nargs="+", required=True)
    parser.add_argument("--pool", choices=("soups", "models"), default="soups",
                        help="soups: the v6 rule; models: every model the run scores, single ingredients too")
    parser.add_argument("--out", type=Path, help="folder for the replayed units")
    parser.add_argument("--overwrite", action="store_true", help="replace units that already exist in --out")
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()

    rows, changed = [], 0
    for target, seeds in sorted(read_units(args.units).items()):
        for seed, unit in sorted(seeds.items()):
            kept = kept_point(unit, args.pool)
            changed += kept != run_kept(unit)
            metric = unit["task"]["metric"]
            new = replayed(unit, kept)
            row = {"target": target, "seed": seed, "kept": kept, "metric": metric}
            for split in ("validation", "test"):
                row[split] = {"before": unit["methods"]["dfwe"][split][metric],
                              "after": new["methods"]["dfwe"][split][metric]}
            rows.append(row)
            if args.out is not None:
                write_unit(args.out / f"seed-{seed}" / f"{target}.json", new, args.overwrite,
                           source=f"the replay of {target} seed {seed}")

    print("| target | seed | kept | dfwe validation: before → after | dfwe test: before → after |")
    print("| --- | ---: | --- | ---: | ---: |")
    for r in rows:
        print(f"| {r['target']} | {r['seed']} | {r['kept']} | {r['validation']['before']:.3f} → "
              f"{r['validation']['after']:.3f} | {r['test']['before']:.3f} → {r['test']['after']:.3f} |")
    summary = {split: {when: float(np.mean([r[split][when] for r in rows])) for when in ("before", "after")}
               for split in ("validation", "test")}
    print(f"\n{changed} of {len(rows)} units keep another point than their run did; mean over units, validation "
          f"{summary['validation']['before']:.4f} → {summary['validation']['after']:.4f}, test "
          f"{summary['test']['before']:.4f} → {summary['test']['after']:.4f}")
    atomic_write_json(args.json, {"units": [str(u) for u in args.units], "pool": args.pool, "rows": rows,
                                  "mean_over_units": summary})


if __name__ == "__main__":
    main()
