"""The benchmark: the whole method and every baseline, once per seed, with mean and spread across seeds.

``out/seeds/<seed>/`` holds each seed's complete run (results, report, merged model); ``out/results.json``
holds every seed's methods and a summary (mean and sample standard deviation over seeds);
``out/report.md`` and ``out/plots/`` present the summary. Experts and target fine-tunes are shared
through ``cache``, so benchmarks at several k, or of several search settings, reuse them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from dfwe.config import RunConfig, config_to_dict  # noqa: E402
from dfwe.io import atomic_write_json, atomic_write_text, claim_output_dir  # noqa: E402
from dfwe.pipeline import run  # noqa: E402
from dfwe.report.write import HEADLINE  # noqa: E402

METRICS = ("weighted_f1", "accuracy", "macro_f1", "loss", "calibrated_loss")


def summarise(per_seed: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Mean and sample standard deviation (ddof=1; 0 for one seed) of every method's dev and test metrics."""
    methods = sorted({m for seed in per_seed.values() for m in seed["methods"]})
    summary: dict[str, Any] = {}
    for method in methods:
        present = [seed["methods"][method] for seed in per_seed.values() if method in seed["methods"]]
        summary[method] = {}
        for split in [s for s in ("dev", "validation", "test") if s in present[0]]:
            summary[method][split] = {}
            for metric in METRICS:
                values = np.array([entry[split][metric] for entry in present])
                spread = float(values.std(ddof=1)) if len(values) > 1 else 0.0
                summary[method][split][metric] = {"mean": float(values.mean()), "std": spread, "n": len(values)}
    return summary


def summary_table(summary: dict[str, Any]) -> str:
    """Markdown: mean +- std over seeds of dev (and validation) and test weighted F1, test accuracy and macro F1."""
    validation = all("validation" in entry for entry in summary.values())
    lines = ["| method | dev weighted F1 |" + (" validation weighted F1 |" if validation else "")
             + " test weighted F1 | test accuracy | test macro F1 |",
             "| --- | ---: |" + (" ---: |" if validation else "") + " ---: | ---: | ---: |"]
    for method, entry in sorted(summary.items(), key=lambda kv: -kv[1]["test"][HEADLINE]["mean"]):
        cells = [entry["dev"][HEADLINE], *([entry["validation"][HEADLINE]] if validation else []),
                 entry["test"][HEADLINE], entry["test"]["accuracy"], entry["test"]["macro_f1"]]
        lines.append(f"| {method} | " + " | ".join(f"{c['mean']:.3f} ± {c['std']:.3f}" for c in cells) + " |")
    return "\n".join(lines)


def plot_summary(summary: dict[str, Any], path: Path, title: str) -> None:
    names = sorted(summary, key=lambda n: summary[n]["test"][HEADLINE]["mean"])
    means = [summary[n]["test"][HEADLINE]["mean"] for n in names]
    stds = [summary[n]["test"][HEADLINE]["std"] for n in names]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(names) + 1.2))
    ax.barh(names, means, xerr=stds, capsize=3, color=["tab:red" if n == "dfwe" else "tab:gray" for n in names])
    ax.set_xlabel("test weighted F1 (mean ± std over seeds)")
    ax.set_title(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_bench(config: RunConfig, seeds: list[int], out_dir: Path, resume: bool = False, overwrite: bool = False,
              cache: Path | None = None) -> dict[str, Any]:
    """Run ``config`` once per seed (seed replaced) and summarise; returns what ``results.json`` holds."""
    claim_output_dir(out_dir, {**config_to_dict(config), "bench_seeds": seeds}, resume, overwrite)
    cache = cache or out_dir / "cache"
    per_seed: dict[str, dict[str, Any]] = {}
    for seed in seeds:
        seeded = config.model_copy(update={"seed": seed})
        results = run(seeded, out_dir / "seeds" / str(seed), resume=True, cache=cache)
        per_seed[str(seed)] = {key: results[key] for key in ("methods", "search", "ingredients", "timing_seconds")}
    summary = summarise(per_seed)
    results = {"config": config_to_dict(config), "seeds": per_seed, "summary": summary}
    atomic_write_json(out_dir / "results.json", results)
    title = f"{config.data.target}, k = {config.data.shots}, seeds {', '.join(map(str, seeds))}"
    plot_summary(summary, out_dir / "plots" / "test_scores.png", title)
    atomic_write_text(out_dir / "report.md", "\n".join([
        f"# dfwe benchmark: {title}", "", f"Mean ± sample std over {len(seeds)} seed(s); "
        f"scores on the official {config.eval.split} split, every choice made on few-sample dev data.", "",
        summary_table(summary), "", "![test scores](plots/test_scores.png)", ""]))
    return results
