"""Issue 20: variants of the merge and the search on FETA-Friends, read on validation beside the run they vary.

Each variant is a ``dfwe bench --suite`` folder run with the same ``--cache`` as the reference and one or more
``--set`` changes to the merge, the search or the target recipe; what the change does not touch is read back,
not retrained (a change to the recipe retrains the ingredients, ``base-ft`` with them, so base-ft's validation
score is printed too). For each target and seed that a run and the reference finished: the headline metric of
dfwe, the two soups and base-ft on the few-sample dev set, on validation and on test; dfwe's paired differences
to base-ft and to the uniform soup (each run's own bootstrap interval); dfwe's largest weight; and the median
seconds per search candidate (merge, head refit, dev pass). Then the mean over those targets of each
difference, beside the reference's over the same targets, and the targets where dfwe loses to the uniform
soup. A variant is chosen on validation, never on test;
test is printed beside it so that every round is reported. Asserts nothing.

    python benchmarks/feta_variants.py --reference runs/feta-s1 \\
        --variant head-average=runs/feta-s1-head-average-emory_emotion_recognition ... \\
        --json benchmarks/results/feta_variants.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from feta_friends import candidate_seconds  # noqa: E402  (the benchmark beside this one)

from dfwe.io import atomic_write_json  # noqa: E402

METHODS = ("base-ft", "uniform-soup", "greedy-soup", "dfwe")
COMPARED = ("base-ft", "uniform-soup")
SETS = ("dev", "validation", "test")


def finished_seeds(folders: list[Path]) -> dict[tuple[str, str], Path]:
    """(target, seed) -> seed folder, for every seed of the suite ``folders`` that wrote its results."""
    return {(f.parents[2].name, f.parent.name): f.parent
            for run in folders for f in sorted(run.glob("targets/*/seeds/*/results.json"))}


def median_candidate_seconds(seed_dir: Path) -> float | None:
    """The median seconds of a seed's search candidates, from its journal."""
    seconds = candidate_seconds(seed_dir / "journal.sqlite")
    return statistics.median(seconds) if seconds else None


def seed_row(seed_dir: Path) -> dict[str, Any]:
    """What one finished seed says about dfwe against the soups and base-ft."""
    results = json.loads((seed_dir / "results.json").read_text())
    metric = results["task"]["metric"]
    row: dict[str, Any] = {"metric": metric, "scores": {}, "dfwe_minus": {}}
    for method in METHODS:
        row["scores"][method] = {s: results["methods"][method][s][metric]
                                 for s in SETS if s in results["methods"][method]}
    for split in ("validation", "test"):
        paired = results["paired"].get(split, {})
        row["dfwe_minus"][split] = {m: paired[m][metric] for m in COMPARED if m in paired}
    weights = results["methods"]["dfwe"]["weights"]
    row["dfwe_largest_weight"] = max(max(group) for group in weights)
    row["median_candidate_seconds"] = median_candidate_seconds(seed_dir)
    row["search_seconds"] = results["timing_seconds"].get("search")
    row["settings"] = {"merge": results["config"]["merge"], "search": results["config"]["search"]}
    return row


def summary(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Mean over targets of dfwe's differences, and the targets where it loses to the uniform soup."""
    out: dict[str, Any] = {f"dfwe_{split}": statistics.fmean(r["scores"]["dfwe"][split] for r in rows.values())
                           for split in ("validation", "test")}
    for split in ("validation", "test"):
        for method in COMPARED:
            diffs = [r["dfwe_minus"][split][method] for r in rows.values() if method in r["dfwe_minus"].get(split, {})]
            if diffs:
                out[f"{split}_minus_{method}"] = statistics.fmean(d["diff"] for d in diffs)
        losses = [key for key, r in rows.items()
                  if r["dfwe_minus"].get(split, {}).get("uniform-soup", {}).get("verdict") == "loses"]
        out[f"{split}_loses_to_uniform"] = losses
    seconds = [r["median_candidate_seconds"] for r in rows.values() if r["median_candidate_seconds"] is not None]
    out["median_candidate_seconds"] = statistics.median(seconds) if seconds else None
    return out


def compare(runs: dict[str, list[Path]]) -> dict[str, Any]:
    """Every run's rows over the (target, seed) pairs it and the reference finished, and its summary beside the
    reference's over the same pairs (a variant that has not finished every target is still compared fairly)."""
    finished = {name: finished_seeds(run) for name, run in runs.items()}
    reference = finished["reference"]
    if not reference:
        raise SystemExit("the reference has no finished target and seed: nothing to compare")
    out: dict[str, Any] = {"units": [f"{t}/seed-{s}" for t, s in sorted(reference)], "runs": {}}
    reference_rows = {f"{t}/seed-{s}": seed_row(reference[(t, s)]) for t, s in sorted(reference)}
    for name, seeds in finished.items():
        shared = sorted(set(seeds) & set(reference))
        rows = {f"{t}/seed-{s}": seed_row(seeds[(t, s)]) for t, s in shared}
        out["runs"][name] = {"folders": [str(f) for f in runs[name]], "rows": rows, "summary": summary(rows),
                             "reference_summary": summary({k: reference_rows[k] for k in rows}) if rows else None}
    return out


def print_tables(result: dict[str, Any]) -> None:
    for unit in result["units"]:
        print(f"\n{unit}  (dfwe minus: validation | test, 'x' where the interval excludes 0)")
        print(f"{'run':<22}{'base val':>9}{'dfwe dev':>9}{'val':>7}{'test':>7}  {'-base val':>10}{'-unif val':>10}"
              f"{'-base test':>11}{'-unif test':>11}{'max w':>7}{'s/cand':>8}")
        for name, run in result["runs"].items():
            row = run["rows"].get(unit)
            if row is None:
                continue
            dfwe = row["scores"]["dfwe"]
            cells = []
            for split in ("validation", "test"):
                for method in COMPARED:
                    d = row["dfwe_minus"][split].get(method)
                    cells.append("" if d is None else f"{d['diff']:+.3f}{'x' if d['verdict'] != 'tie' else ' '}")
            seconds = row["median_candidate_seconds"]
            print(f"{name:<22}{row['scores']['base-ft'].get('validation', float('nan')):>9.3f}"
                  f"{dfwe.get('dev', float('nan')):>9.3f}{dfwe.get('validation', float('nan')):>7.3f}"
                  f"{dfwe['test']:>7.3f}  {cells[0]:>10}{cells[1]:>10}{cells[2]:>11}{cells[3]:>11}"
                  f"{row['dfwe_largest_weight']:>7.2f}{'' if seconds is None else f'{seconds:.1f}':>8}")
    print("\nmean over the targets each run finished of dfwe minus (and the reference over the same targets)")
    for name, run in result["runs"].items():
        if not run["rows"]:
            continue
        for label, s in ((name, run["summary"]), ("  reference, same", run["reference_summary"])):
            parts = [f"{k}={v:+.4f}" for k, v in s.items() if isinstance(v, float) and "minus" in k]
            print(f"{label:<22}({len(run['rows'])}) dfwe validation {s['dfwe_validation']:.3f} test "
                  f"{s['dfwe_test']:.3f}  " + "  ".join(parts)
                  + f"  loses to uniform (val): {s['validation_loses_to_uniform']}  (test): {s['test_loses_to_uniform']}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", type=Path, action="append", required=True,
                        help="the suite folder the variants vary (given again adds a folder: another seed or target)")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=FOLDER",
                        help="a suite folder run with the reference's cache and other merge or search settings "
                             "(a name given again adds a folder: one per target)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    runs = {"reference": list(args.reference)}
    for spec in args.variant:
        name, sep, folder = spec.partition("=")
        if not sep or name == "reference":
            parser.error(f"--variant {spec}: write NAME=FOLDER (a name other than 'reference')")
        runs.setdefault(name, []).append(Path(folder))
    result = compare(runs)
    print_tables(result)
    if args.json:
        atomic_write_json(args.json, result)


if __name__ == "__main__":
    main()
