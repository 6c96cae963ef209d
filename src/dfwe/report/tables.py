"""Markdown tables of a run's, a benchmark's and a suite's results (dicts as ``results.json`` holds them)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from dfwe.eval.seeds import SPLITS
from dfwe.train.target import BASE_FT

METRIC_NAMES = {"weighted_f1": "weighted F1", "macro_f1": "macro F1", "micro_f1": "micro F1", "accuracy": "accuracy",
                "token_f1": "token F1", "exact_match": "exact match"}


def metric_name(metric: str) -> str:
    return METRIC_NAMES.get(metric, metric)


def results_table(methods: dict[str, dict[str, Any]], metric: str) -> str:
    """A markdown table: every method's dev and test headline ``metric`` (test with its 95% CI) and its other
    test metrics, sorted by the test headline; methods scored on dev alone (``dfwe search``) get dev columns."""
    if not all("test" in result for result in methods.values()):
        return _dev_table(methods, metric)
    others = [m for m in next(iter(methods.values()))["test"] if m not in (metric, "loss", "calibrated_loss")]
    name = metric_name(metric)
    lines = [f"| method | dev {name} | test {name} (95% CI) | " + " | ".join(f"test {metric_name(m)}" for m in others)
             + " |", "| --- | ---: | ---: |" + " ---: |" * len(others)]
    for method, result in sorted(methods.items(), key=lambda kv: -kv[1]["test"][metric]):
        test, dev = result["test"], result.get("dev") or {}
        ci = result.get("test_ci", {}).get(metric)
        interval = f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""
        dev_score = f"{dev[metric]:.3f}" if metric in dev else "-"
        lines.append(f"| {method} | {dev_score} | {test[metric]:.3f}{interval} | "
                     + " | ".join(f"{test[m]:.3f}" for m in others) + " |")
    return "\n".join(lines)


def _dev_table(methods: dict[str, dict[str, Any]], metric: str) -> str:
    shown = [metric, *(m for m in next(iter(methods.values()))["dev"] if m != metric)]
    lines = ["| method | " + " | ".join(f"dev {metric_name(m)}" for m in shown) + " |",
             "| --- |" + " ---: |" * len(shown)]
    for method, result in sorted(methods.items(), key=lambda kv: -kv[1]["dev"][metric]):
        lines.append(f"| {method} | " + " | ".join(f"{result['dev'][m]:.3f}" for m in shown) + " |")
    return "\n".join(lines)


def paired_table(paired: dict[str, dict[str, dict]], metric: str) -> str:
    """Markdown: dfwe minus each method on the same examples, with the paired 95% interval and the verdict."""
    name = metric_name(metric)
    lines = [f"| dfwe − method | {name} difference | paired 95% CI | verdict |", "| --- | ---: | --- | --- |"]
    for other, diffs in sorted(paired.items(), key=lambda kv: -kv[1][metric]["diff"]):
        entry = diffs[metric]
        lines.append(f"| dfwe − {other} | {entry['diff']:+.3f} | [{entry['ci'][0]:+.3f}, {entry['ci'][1]:+.3f}] | "
                     f"{entry['verdict']} |")
    return "\n".join(lines)


def barrier_table(barriers: list[dict], metric: str) -> str:
    """Markdown: the dev loss barrier (midpoint minus mean of the ends) of every pair of ingredients."""
    lines = [f"| pair | dev loss a / b / mid | loss barrier | calibrated-loss barrier | dev {metric_name(metric)} "
             "a / b / mid |", "| --- | --- | ---: | ---: | --- |"]
    for row in barriers:
        loss, cal, head = row["loss"], row["calibrated_loss"], row[metric]
        lines.append(f"| {row['a']} ↔ {row['b']} | {loss['a']:.3f} / {loss['b']:.3f} / {loss['mid']:.3f} | "
                     f"{loss['barrier']:+.3f} | {cal['barrier']:+.3f} | "
                     f"{head['a']:.3f} / {head['b']:.3f} / {head['mid']:.3f} |")
    return "\n".join(lines)


def summary_table(summary: Mapping[str, Any], metric: str) -> str:
    """Markdown: mean ± std over seeds of the headline metric on each split, and the other test metrics."""
    any_entry = next(iter(summary.values()))
    splits = [s for s in SPLITS if s in any_entry]
    others = [m for m in any_entry["test"] if m not in (metric, "loss", "calibrated_loss")]
    name = metric_name(metric)
    lines = ["| method | " + " | ".join(f"{s} {name}" for s in splits) + " | "
             + " | ".join(f"test {metric_name(m)}" for m in others) + " |",
             "| --- |" + " ---: |" * (len(splits) + len(others))]
    for method, entry in sorted(summary.items(), key=lambda kv: -kv[1]["test"][metric]["mean"]):
        cells = [entry[s][metric] for s in splits] + [entry["test"][m] for m in others]
        lines.append(f"| {method} | " + " | ".join(f"{c['mean']:.3f} ± {c['std']:.3f}" for c in cells) + " |")
    return "\n".join(lines)


def pooled_table(paired: Mapping[str, Mapping[str, dict]], metric: str) -> str:
    """Markdown: dfwe minus each method, per-seed differences, their mean ± std, the pooled paired interval."""
    name = metric_name(metric)
    lines = [f"| dfwe − method | per-seed {name} differences | mean ± std | pooled paired 95% CI | verdict |",
             "| --- | --- | ---: | --- | --- |"]
    for other, diffs in sorted(paired.items(), key=lambda kv: -kv[1][metric]["mean"]):
        entry = diffs[metric]
        per = ", ".join(f"{d:+.3f}" for d in entry["per_seed"])
        lines.append(f"| dfwe − {other} | {per} | {entry['mean']:+.3f} ± {entry['std']:.3f} | "
                     f"[{entry['ci'][0]:+.3f}, {entry['ci'][1]:+.3f}] | {entry['verdict']} |")
    return "\n".join(lines)


def suite_table(targets: Mapping[str, Mapping[str, Any]], average: Mapping[str, Any], methods: Sequence[str]) -> str:
    """Markdown: per target its headline metric, FETA's baseline score (base-ft) and every method's transfer score
    and delta (mean over seeds), then the average over targets."""
    lines = ["| target (metric) | base-ft | " + " | ".join(f"{m} (Δ)" for m in methods) + " |",
             "| --- | ---: |" + " ---: |" * len(methods)]
    for name, target in targets.items():
        summary, metric = target["summary"], target["task"]["metric"]
        base = summary[BASE_FT]["test"][metric]["mean"]
        cells = [f"{summary[m]['test'][metric]['mean']:.3f} ({summary[m]['test'][metric]['mean'] - base:+.3f})"
                 for m in methods]
        lines.append(f"| {name} ({metric_name(metric)}) | {base:.3f} | " + " | ".join(cells) + " |")
    cells = [f"{average[m]['score']['mean']:.3f} ({average[m]['transfer_delta']['mean']:+.3f})" for m in methods]
    lines.append(f"| **average** | {average[BASE_FT]['score']['mean']:.3f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
