"""``report.md`` and ``plots/*.png`` from a results dict (the content of ``results.json``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from dfwe.io import atomic_write_text  # noqa: E402

HEADLINE = "weighted_f1"


def results_table(methods: dict[str, dict[str, Any]]) -> str:
    """A markdown table: dev and test scores of every method, sorted by test weighted F1."""
    lines = ["| method | dev weighted F1 | test weighted F1 (95% CI) | test accuracy | test macro F1 |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for name, result in sorted(methods.items(), key=lambda kv: -kv[1]["test"][HEADLINE]):
        test, dev = result["test"], result.get("dev") or {}
        ci = result.get("test_ci", {}).get(HEADLINE)
        interval = f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""
        dev_score = f"{dev[HEADLINE]:.3f}" if HEADLINE in dev else "-"
        lines.append(f"| {name} | {dev_score} | {test[HEADLINE]:.3f}{interval} | {test['accuracy']:.3f} | "
                     f"{test['macro_f1']:.3f} |")
    return "\n".join(lines)


def plot_scores(methods: dict[str, dict[str, Any]], path: Path) -> None:
    names = sorted(methods, key=lambda n: methods[n]["test"][HEADLINE])
    scores = np.array([methods[n]["test"][HEADLINE] for n in names])
    cis = [methods[n].get("test_ci", {}).get(HEADLINE) for n in names]
    errors = np.array([[s - c[0], c[1] - s] if c else [0.0, 0.0] for s, c in zip(scores, cis)]).T
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(names) + 1.2))
    colors = ["tab:red" if n == "dfwe" else "tab:gray" for n in names]
    ax.barh(names, scores, xerr=errors, color=colors, capsize=3)
    ax.set_xlabel("test weighted F1 (95% bootstrap CI)")
    ax.set_xlim(0, max(1e-3, float((scores + errors[1]).max())) * 1.1)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_trace(trace: list[float], best_so_far: list[float], objective: str, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    steps = np.arange(1, len(trace) + 1)
    ax.scatter(steps, trace, s=10, color="tab:gray", label="candidate")
    ax.plot(steps, best_so_far, color="tab:red", label="best so far")
    ax.set_xlabel("evaluation")
    ax.set_ylabel(f"dev objective ({objective}; lower is better)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_weights(weights: list[list[float]], ingredients: list[str], groups: list[str], path: Path) -> None:
    matrix = np.atleast_2d(np.array(weights))
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(ingredients), 1.0 + 0.35 * len(groups)))
    image = ax.imshow(matrix, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(ingredients)), ingredients, rotation=30, ha="right")
    ax.set_yticks(range(len(groups)), groups)
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, f"{value:.2f}", ha="center", va="center", color="white" if value < matrix.max() / 2 else "black",
                fontsize=8)
    fig.colorbar(image, ax=ax)
    ax.set_title("dfwe weights")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(out_dir: Path, results: dict[str, Any]) -> None:
    """Write ``report.md`` and its plots into ``out_dir``."""
    plots = out_dir / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    methods = results["methods"]
    plot_scores(methods, plots / "test_scores.png")
    body = ["# dfwe report", "", results_table(methods), "", "![test scores](plots/test_scores.png)", ""]
    search = results.get("search")
    if search:
        plot_trace(search["trace"], search["best_so_far"], search["objective"], plots / "search_trace.png")
        dfwe = methods["dfwe"]
        plot_weights(dfwe["weights"], dfwe["ingredients"], dfwe.get("groups", ["all"]), plots / "weights.png")
        body += [f"## Search", "",
                 f"{search['evaluations']} candidates scored with `{search['optimizer']}` (seed {search['seed']}) "
                 f"on the dev objective `{search['objective']}`; best objective {search['best_objective']:.4f}.",
                 "", "![search trace](plots/search_trace.png)", "", "![weights](plots/weights.png)", ""]
    body += ["Test scores are reported only; no choice above looked at test data.", ""]
    atomic_write_text(out_dir / "report.md", "\n".join(body))
