"""FETA's Codalab layout: one CSV of test predictions per target, method and seed.

The formats follow TLiDB's example submission (``tlidb/examples/example_friends_submission``): no header, one
``id,prediction`` line per test instance; integer class ids in the task's label order (classification); the
answer string (question answering, reading comprehension); and for relation extraction a float vector such as
``[1.0 0.0 ...]`` over all 37 DialogRE relations in the order TLiDB's ``Friends_dataset.py`` lists them, the
three that FETA drops included (always 0 here).
"""

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

# TLiDB's relation order (Friends_dataset.py, relations_to_natural_language_map): the slots of its vectors
TLIDB_RELATIONS = (
    "per:positive_impression", "per:negative_impression", "per:acquaintance", "per:alumni", "per:boss",
    "per:subordinate", "per:client", "per:dates", "per:friends", "per:girl/boyfriend", "per:neighbor",
    "per:roommate", "per:children", "per:other_family", "per:parents", "per:siblings", "per:spouse",
    "per:place_of_residence", "per:place_of_birth", "per:visited_place", "per:origin", "per:employee_or_member_of",
    "per:schools_attended", "per:works", "per:age", "per:date_of_birth", "per:major", "per:place_of_work",
    "per:title", "per:alternate_names", "per:pet", "gpe:residents_of_place", "gpe:visitors_of_place",
    "gpe:births_in_place", "org:employees_or_members", "org:students", "unanswerable",
)


SUBMISSION_FILES = (("baseline_predictions.csv", BASE_FT), ("predictions.csv", "dfwe"))


def submission_value(prediction: Any, task: Task) -> str:
    """One prediction as FETA's files write it: the shape's own form, except relation vectors (TLiDB's 37 slots,
    wherever the task's labels are DialogRE relations)."""
    if task.shape == "multilabel" and set(task.labels) <= set(TLIDB_RELATIONS):
        chosen = set(prediction)
        return "[" + " ".join("1.0" if relation in chosen else "0.0" for relation in TLIDB_RELATIONS) + "]"
    return get_shape(task.shape).submission(prediction, task)


def submission_csv(ids: Sequence[str], predictions: Sequence[Any], task: Task) -> str:
    """One Codalab file: no header, one ``instance id,prediction`` line per test example."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for example_id, prediction in zip(ids, predictions):
        writer.writerow([example_id, submission_value(prediction, task)])
    return buffer.getvalue()


def write_submission(out_dir: Path, target: str, task_info: dict[str, Any], scores: Sequence[Scores],
                     seeds: Sequence[int]) -> None:
    """FETA's Codalab layout, one folder per seed: ``<task>/baseline_predictions.csv`` (base-ft) and
    ``<task>/predictions.csv`` (dfwe).

    ``task_info`` is the ``task`` block of the target's results; ``scores`` holds each seed's test predictions.
    """
    task = Task.described(task_info | {"task": target}, out_dir)
    for seed, seed_scores in zip(seeds, scores):
        folder = out_dir / "submission" / f"seed-{seed}" / target
        for file, method in SUBMISSION_FILES:
            atomic_write_text(folder / file, submission_csv(seed_scores.test_ids,
                                                            seed_scores.test_predictions[method], task))
