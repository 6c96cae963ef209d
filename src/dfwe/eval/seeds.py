"""Statistics over seeds: every method's mean and spread, dfwe's paired differences pooled over seeds, FETA's
transfer deltas, and the average over a suite's targets.

Every seed scores the same held-out examples, so a pooled paired interval applies one set of resample weights
to all seeds (:func:`dfwe.stats.pooled_difference`).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from dfwe.stats import MetricStats, pooled_difference
from dfwe.train.target import BASE_FT

SPLITS = ("dev", "validation", "test")


def summarise(per_seed: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Mean and sample standard deviation (ddof=1; 0 for one seed) of every method's metrics on every split."""
    methods = sorted({m for seed in per_seed.values() for m in seed["methods"]})
    summary: dict[str, Any] = {}
    for method in methods:
        present = [seed["methods"][method] for seed in per_seed.values() if method in seed["methods"]]
        summary[method] = {}
        for split in [s for s in SPLITS if s in present[0]]:
            summary[method][split] = {}
            for metric in present[0][split]:
                values = np.array([entry[split][metric] for entry in present])
                spread = float(values.std(ddof=1)) if len(values) > 1 else 0.0
                summary[method][split][metric] = {"mean": float(values.mean()), "std": spread, "n": len(values)}
    return summary


def pooled_paired(per_split: Mapping[str, Sequence[Mapping[str, MetricStats]]], resamples: int, seed: int
                  ) -> dict[str, dict[str, dict]]:
    """dfwe minus every other method, per seed and pooled over seeds, on each split whose every seed has
    per-example statistics (``per_split[split]``: one ``{method: stats}`` per seed)."""
    paired: dict[str, dict[str, dict]] = {}
    for split, stats in per_split.items():
        if not resamples or not all(stats):
            continue
        paired[split] = {other: pooled_difference([(s["dfwe"], s[other]) for s in stats], resamples, seed)
                         for other in stats[0] if other != "dfwe"}
    return paired


def mean_barriers(per_seed: Mapping[str, Mapping[str, Any]]) -> list[dict]:
    """The barrier table averaged over seeds, pair by pair (in the order of the first seed), over the pairs that
    every seed measured: seeds run with ``eval.barriers: all`` and ``base`` share only ``base-ft``'s pairs."""
    tables = [{(row["a"], row["b"]): row for row in seed["barriers"]}
              for seed in per_seed.values() if seed.get("barriers")]
    if not tables:
        return []
    rows = []
    for pair, first in tables[0].items():
        if any(pair not in table for table in tables[1:]):
            continue
        row: dict = {"a": first["a"], "b": first["b"]}
        for metric in first:
            if metric in ("a", "b"):
                continue
            row[metric] = {part: float(np.mean([t[pair][metric][part] for t in tables])) for part in first[metric]}
        rows.append(row)
    return rows


def transfer_deltas(stats: Sequence[Mapping[str, MetricStats]], metric: str, resamples: int, seed: int
                    ) -> dict[str, dict]:
    """Every method minus ``base-ft`` (FETA's transfer delta) on the headline ``metric``: per seed, mean ± std, and
    a pooled paired interval over the shared test examples (``stats``: one ``{method: stats}`` per seed)."""
    return {method: pooled_difference([(s[method], s[BASE_FT]) for s in stats], max(resamples, 1), seed)[metric]
            for method in stats[0] if method != BASE_FT}


def average_over_targets(targets: Mapping[str, Mapping[str, Any]], seeds: Sequence[int]) -> dict[str, Any]:
    """Per method: the headline score and the transfer delta averaged over targets, then mean ± std over seeds."""
    methods = set.intersection(*(set(t["seeds"][str(seeds[0])]["methods"]) for t in targets.values()))
    average: dict[str, Any] = {}
    for method in sorted(methods):
        scores, deltas = [], []
        for seed in map(str, seeds):
            per_target = [(t["seeds"][seed]["methods"][method]["test"][t["task"]["metric"]],
                           t["seeds"][seed]["methods"][BASE_FT]["test"][t["task"]["metric"]]) for t in targets.values()]
            scores.append(np.mean([s for s, _ in per_target]))
            deltas.append(np.mean([s - b for s, b in per_target]))
        average[method] = {name: {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0,
                                  "per_seed": [float(x) for x in v]}
                           for name, v in (("score", scores), ("transfer_delta", deltas))}
    return average
