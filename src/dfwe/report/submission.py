"""FETA's Codalab layout: one CSV of test predictions per target, method and seed."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Sequence

from dfwe.data.records import Task
from dfwe.data.shapes import get_shape
from dfwe.eval.scores import Scores
from dfwe.io import atomic_write_text
from dfwe.train.target import BASE_FT


def write_submission(out_dir: Path, target: str, task_info: dict[str, Any], scores: Sequence[Scores],
                     seeds: Sequence[int]) -> None:
    """FETA's Codalab layout, one folder per seed: ``<task>/baseline_predictions.csv`` (base-ft) and
    ``<task>/predictions.csv`` (dfwe), no header, one ``instance id,prediction`` line per test example.

    ``task_info`` is the ``task`` block of the target's results; ``scores`` holds each seed's test predictions.
    """
    task = Task.described(task_info | {"task": target}, out_dir)
    shape = get_shape(task.shape)
    for seed, seed_scores in zip(seeds, scores):
        folder = out_dir / "submission" / f"seed-{seed}" / target
        for file, method in (("baseline_predictions.csv", BASE_FT), ("predictions.csv", "dfwe")):
            buffer = io.StringIO()
            writer = csv.writer(buffer, lineterminator="\n")
            for example_id, prediction in zip(seed_scores.test_ids, seed_scores.test_predictions[method]):
                writer.writerow([example_id, shape.submission(prediction, task)])
            atomic_write_text(folder / file, buffer.getvalue())
