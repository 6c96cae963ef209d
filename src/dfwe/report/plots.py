"""Plots of a run's and a benchmark's results (dicts as ``results.json`` holds them).

Plots use matplotlib's object-oriented :class:`~matplotlib.figure.Figure`, which needs no backend: importing
this module leaves matplotlib's global backend (and pyplot) alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np
from matplotlib.figure import Figure

from dfwe.report.tables import metric_name


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


def plot_summary(summary: Mapping[str, Any], metric: str, path: Path, title: str) -> None:
    names = sorted(summary, key=lambda n: summary[n]["test"][metric]["mean"])
    means = [summary[n]["test"][metric]["mean"] for n in names]
    stds = [summary[n]["test"][metric]["std"] for n in names]
    fig = Figure(figsize=(7, 0.45 * len(names) + 1.2), layout="tight")
    ax = fig.subplots()
    ax.barh(names, means, xerr=stds, capsize=3, color=["tab:red" if n == "dfwe" else "tab:gray" for n in names])
    ax.set_xlabel(f"test {metric_name(metric)} (mean ± std over seeds)")
    ax.set_title(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
