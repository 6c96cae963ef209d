"""Writing a run's outputs: ``merged/``, ``mergekit.yaml``, ``results.json``, ``report.md``, ``plots/*.png`` and
``predictions.json``.

:func:`write_outputs` is the one writer that the pipeline and ``dfwe search`` share; the pipeline also writes every
method's held-out predictions with :func:`write_predictions` (read back by :func:`read_predictions`); the
benchmark and the suite write their summary reports with :func:`write_bench_report` and :func:`write_suite_report`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from dfwe.data.encode import Preprocessing
from dfwe.eval.scores import HELD_OUT, Scores
from dfwe.io import atomic_write_json, atomic_write_text, read_json
from dfwe.merge.export import export_merge
from dfwe.merge.fold import DevFold
from dfwe.report.plots import plot_scores, plot_summary, plot_trace, plot_weights
from dfwe.report.tables import (
    barrier_table,
    metric_name,
    paired_table,
    pooled_table,
    results_table,
    suite_table,
    summary_table,
)


def write_outputs(out_dir: Path, results: dict[str, Any], fold: DevFold, base: Path | None = None,
                  prep: Preprocessing | None = None) -> None:
    """Export dfwe's merge of ``fold`` (its weights, method and ingredient names as ``results`` records them; see
    :func:`~dfwe.merge.export.export_merge` for ``base`` and ``prep``), then write ``results.json`` and the report."""
    dfwe = results["methods"]["dfwe"]
    export_merge(out_dir, fold, np.asarray(dfwe["weights"]), dfwe["method"], dfwe["ingredients"], base, prep)
    atomic_write_json(out_dir / "results.json", results)
    write_report(out_dir, results)


def write_predictions(out_dir: Path, scores: Scores, inputs: str) -> None:
    """``predictions.json``: every method's decoded prediction for each held-out example, in ``ids`` order (the
    test split at the top level, the validation split under ``validation``), and ``inputs``, the key of what the
    run was computed from. Written last: a run folder that holds it has finished.

    With the task's examples they rebuild every per-example statistic (:meth:`Shape.metric_stats`), so paired
    intervals pooled over seeds or runs can be computed later, on another machine, without the models, and a
    resumed run that finished is read back instead of scored again.
    """
    def held_out(split: str) -> dict[str, Any]:
        return {"ids": list(scores.ids[split]),
                "methods": {m: [_plain(p) for p in values] for m, values in scores.predictions[split].items()}}

    extra = {split: held_out(split) for split in scores.ids if split != "test"}
    atomic_write_json(out_dir / "predictions.json", {**held_out("test"), **extra, "inputs": inputs})


def read_predictions(out_dir: Path) -> tuple[dict[str, dict[str, Any]], str | None] | None:
    """What :func:`write_predictions` wrote into ``out_dir``, per held-out split, and its ``inputs`` key (None
    for a file from an earlier version); None if ``out_dir`` holds no such file."""
    path = out_dir / "predictions.json"
    if not path.is_file():
        return None
    saved = read_json(path)
    splits = {"test": {"ids": saved["ids"], "methods": saved["methods"]},
              **{split: saved[split] for split in HELD_OUT if split != "test" and split in saved}}
    return splits, saved.get("inputs")


def _plain(value: Any) -> Any:
    # decoders return numpy scalars and tuples; JSON wants ints, floats, strings and lists
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (tuple, list, np.ndarray)):
        return [_plain(v) for v in value]
    return value


def write_report(out_dir: Path, results: dict[str, Any]) -> None:
    """Write ``report.md`` and its plots into ``out_dir``."""
    plots = out_dir / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    methods, metric, task = results["methods"], results["task"]["metric"], results["task"]
    held_out = all("test" in entry for entry in methods.values())  # dfwe search scores on dev alone
    body = [f"# dfwe report: {task['name']} ({task['shape']}, headline {metric_name(metric)})", "",
            results_table(methods, metric), ""]
    if held_out:
        plot_scores(methods, metric, plots / "test_scores.png")
        body += ["![test scores](plots/test_scores.png)", ""]
    if results.get("paired", {}).get("test"):
        body += ["## dfwe against each method (paired)", "",
                 "Differences on the same test examples, with a paired bootstrap interval; \"beats\" and "
                 "\"loses\" only where that interval excludes 0, \"tie\" otherwise.", "",
                 paired_table(results["paired"]["test"], metric), ""]
    search = results.get("search")
    if search:
        plot_trace(search["trace"], search["best_so_far"], search["objective"], plots / "search_trace.png")
        dfwe = methods["dfwe"]
        # ingredients given as checkpoint paths (dfwe search) are labelled by their folder names
        plot_weights(dfwe["weights"], [Path(name).name for name in dfwe["ingredients"]], dfwe.get("groups", ["all"]),
                     plots / "weights.png")
        body += ["## Search", "",
                 f"{search['evaluations']} candidates scored with `{search['optimizer']}` (seed {search['seed']}) "
                 f"on the dev objective `{search['objective']}`; best objective {search['best_objective']:.4f}"
                 + (f", the {search['kept']}'s (scored after the budget; no candidate of the search did better)."
                    if search.get("kept", "search") != "search" else "."),
                 "", "![search trace](plots/search_trace.png)", "", "![weights](plots/weights.png)", ""]
    if results.get("barriers"):
        body += ["## Loss barriers between ingredients (dev)", "", barrier_table(results["barriers"], metric), ""]
    if held_out:
        body += ["Test scores are reported only; no choice above looked at test data.", ""]
    atomic_write_text(out_dir / "report.md", "\n".join(body))



def write_bench_report(out_dir: Path, results: Mapping[str, Any], title: str, held_out: str) -> None:
    """Write a benchmark's ``report.md`` and its plot: every method over seeds, dfwe paired against each."""
    metric = results["task"]["metric"]
    plot_summary(results["summary"], metric, out_dir / "plots" / "test_scores.png", title)
    body = [f"# dfwe benchmark: {title}", "",
            f"Mean ± sample std over {len(results['seeds'])} seed(s); the `test` column is the official {held_out} "
            "split; every choice was made on few-sample dev data.", "",
            summary_table(results["summary"], metric), "", "![test scores](plots/test_scores.png)", ""]
    if results["paired"].get("test"):
        body += ["## dfwe against each method, paired over the same test examples", "",
                 "Per-seed differences, their mean ± std, and a paired bootstrap interval of the seed-mean difference "
                 "(the same resampled test examples for every seed); \"beats\"/\"loses\" only where it excludes 0.", "",
                 pooled_table(results["paired"]["test"], metric), ""]
    if results["barriers"]:
        body += ["## Loss barriers between ingredients (dev, mean over seeds)", "",
                 barrier_table(results["barriers"], metric), ""]
    atomic_write_text(out_dir / "report.md", "\n".join(body))


def write_suite_report(out_dir: Path, results: Mapping[str, Any], suite: str, seeds: Sequence[int]) -> None:
    """Write a suite's ``report.md``: every target's transfer scores and deltas, and their average."""
    methods = [m for m in ("multitask-ft", "best-expert-ft", "greedy-soup", "logit-ensemble", "uniform-soup", "dfwe")
               if m in results["average"]]
    atomic_write_text(out_dir / "report.md", "\n".join([
        f"# dfwe on the suite {suite}: seeds {', '.join(map(str, seeds))}", "",
        "Test headline metric per target (mean over seeds) and, in brackets, the transfer delta against base-ft "
        "(FETA's baseline score: the target fine-tuned alone). Per-target folders hold the paired intervals.", "",
        suite_table(results["targets"], results["average"], methods), ""]))
