"""``report.md`` and ``plots/*.png`` from a results dict (the content of ``results.json``).

Plots use matplotlib's object-oriented :class:`~matplotlib.figure.Figure`, which needs no backend: importing
this module leaves matplotlib's global backend (and pyplot) alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from dfwe.io import atomic_write_text

METRIC_NAMES = {"weighted_f1": "weighted F1", "macro_f1": "macro F1", "micro_f1": "micro F1", "accuracy": "accuracy",
                "token_f1": "token F1", "exact_match": "exact match"}


def metric_name(metric: str) -> str:
    return METRIC_NAMES.get(metric, metric)


def results_table(methods: dict[str, dict[str, Any]], metric: str) -> str:
    """A markdown table: every method's dev and test headline ``metric`` (test with its 95% CI) and its other
    test metrics, sorted by the test headline."""
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


def plot_scores(methods: dict[str, dict[str, Any]], metric: str, path: Path) -> None:
    names = sorted(methods, key=lambda n: methods[n]["test"][metric])
    scores = np.array([methods[n]["test"][metric] for n in names])
    cis = [methods[n].get("test_ci", {}).get(metric) for n in names]
    errors = np.array([[s - c[0], c[1] - s] if c else [0.0, 0.0] for s, c in zip(scores, cis)]).T
    fig = Figure(figsize=(7, 0.45 * len(names) + 1.2), layout="tight")
    ax = fig.subplots()
    colors = ["tab:red" if n == "dfwe" else "tab:gray" for n in names]
    ax.barh(names, scores, xerr=errors, color=colors, capsize=3)
    ax.set_xlabel(f"test {metric_name(metric)} (95% bootstrap CI)")
    ax.set_xlim(0, max(1e-3, float((scores + errors[1]).max())) * 1.1)
    fig.savefig(path, dpi=120)


def plot_trace(trace: list[float], best_so_far: list[float], objective: str, path: Path) -> None:
    fig = Figure(figsize=(6, 3.5), layout="tight")
    ax = fig.subplots()
    steps = np.arange(1, len(trace) + 1)
    ax.scatter(steps, trace, s=10, color="tab:gray", label="candidate")
    ax.plot(steps, best_so_far, color="tab:red", label="best so far")
    ax.set_xlabel("evaluation")
    ax.set_ylabel(f"dev objective ({objective}; lower is better)")
    ax.legend()
    fig.savefig(path, dpi=120)


def plot_weights(weights: list[list[float]], ingredients: list[str], groups: list[str], path: Path) -> None:
    matrix = np.atleast_2d(np.array(weights))
    fig = Figure(figsize=(1.6 + 1.3 * len(ingredients), 2.2 + 0.35 * len(groups)), layout="tight")
    ax = fig.subplots()
    image = ax.imshow(matrix, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(ingredients)), ingredients, rotation=30, ha="right")
    ax.set_yticks(range(len(groups)), groups)
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, f"{value:.2f}", ha="center", va="center", color="white" if value < matrix.max() / 2 else "black",
                fontsize=8)
    fig.colorbar(image, ax=ax)
    ax.set_title("dfwe weights")
    fig.savefig(path, dpi=120)


def write_report(out_dir: Path, results: dict[str, Any]) -> None:
    """Write ``report.md`` and its plots into ``out_dir``."""
    plots = out_dir / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    methods, metric = results["methods"], results["task"]["metric"]
    plot_scores(methods, metric, plots / "test_scores.png")
    task = results["task"]
    body = [f"# dfwe report: {task['name']} ({task['shape']}, headline {metric_name(metric)})", "",
            results_table(methods, metric), "", "![test scores](plots/test_scores.png)", ""]
    if results.get("paired", {}).get("test"):
        body += ["## dfwe against each method (paired)", "",
                 "Differences on the same test examples, with a paired bootstrap interval; \"beats\" and "
                 "\"loses\" only where that interval excludes 0, \"tie\" otherwise.", "",
                 paired_table(results["paired"]["test"], metric), ""]
    search = results.get("search")
    if search:
        plot_trace(search["trace"], search["best_so_far"], search["objective"], plots / "search_trace.png")
        dfwe = methods["dfwe"]
        plot_weights(dfwe["weights"], dfwe["ingredients"], dfwe.get("groups", ["all"]), plots / "weights.png")
        body += ["## Search", "",
                 f"{search['evaluations']} candidates scored with `{search['optimizer']}` (seed {search['seed']}) "
                 f"on the dev objective `{search['objective']}`; best objective {search['best_objective']:.4f}.",
                 "", "![search trace](plots/search_trace.png)", "", "![weights](plots/weights.png)", ""]
    if results.get("barriers"):
        body += ["## Loss barriers between ingredients (dev)", "", barrier_table(results["barriers"], metric), ""]
    body += ["Test scores are reported only; no choice above looked at test data.", ""]
    atomic_write_text(out_dir / "report.md", "\n".join(body))
