"""Issue 20: does a question-answering model read the question? The share of answers that repeat the passage's.

FETA-Friends' question answering asks about ten questions of each scene. A model that ignores the question gives
every question of a scene the same span. For each method of a finished seed folder (``predictions.json``) or
unit, and for each held-out split it holds: the share of questions whose answer is the most common answer among
its scene's questions ("repeat share"; 1/questions-per-scene for a model that never repeats, 1.0 for one that
reads only the scene; the gold answers' own share beside it), the number of distinct answers, and the token
F1. Diagnostic only: it chooses nothing.

    python benchmarks/qa_question_blind.py --suite ../shared/data/feta_friends \\
        benchmarks/results/feta_friends_v2/seed-0/question_answering.json \\
        runs/feta-v3grid-s0-qa/targets/question_answering/seeds/0/predictions.json
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from dfwe.data.shapes.span import token_f1  # noqa: E402

SPLIT_FILES = {"test": "test", "validation": "dev"}  # validation: the official dev split less the few-sample dev
METHODS = ("base-ft", "multitask-ft", "uniform-soup", "dfwe")


def read_split(suite: Path, split: str) -> dict[str, dict[str, Any]]:
    path = suite / "question_answering" / f"{SPLIT_FILES[split]}.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        return {record["id"]: record for record in map(json.loads, lines)}


def held_out_predictions(path: Path) -> dict[str, dict[str, Any]]:
    """split -> {"ids", "methods"}: a unit keeps test under ``predictions``; a seed folder's file keeps test at
    its top level and validation under its own key."""
    saved = json.loads(path.read_text())
    if "predictions" in saved:
        return {"test": saved["predictions"]}
    return {"test": {"ids": saved["ids"], "methods": saved["methods"]},
            **({"validation": saved["validation"]} if "validation" in saved else {})}


def repeat_share(ids: list[str], answers: list[str], records: dict[str, dict[str, Any]]) -> float:
    by_scene: dict[str, list[str]] = defaultdict(list)
    for example_id, answer in zip(ids, answers):
        by_scene[records[example_id]["context"]].append(answer)
    return sum(Counter(a).most_common(1)[0][1] for a in by_scene.values()) / len(ids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", type=Path, default=Path("../shared/data/feta_friends"))
    parser.add_argument("files", type=Path, nargs="+", help="units or seed folders' predictions.json")
    args = parser.parse_args()
    print("| file | split | method | repeat share | distinct answers | token F1 |\n| --- | --- | --- | ---: | ---: | ---: |")
    for path in args.files:
        for split, held_out in held_out_predictions(path).items():
            records = read_split(args.suite, split)
            ids = held_out["ids"]
            # the first gold answer as a "method": how often the scene's questions really share an answer
            gold_answers = [records[i]["answers"][0]["text"] for i in ids]
            for method, answers in [("gold", gold_answers), *((m, held_out["methods"][m]) for m in METHODS)]:
                f1 = np.mean([max(token_f1(a, gold["text"]) for gold in records[i]["answers"])
                              for i, a in zip(ids, answers)])
                print(f"| {path} | {split} | {method} | {repeat_share(ids, answers, records):.2f} | "
                      f"{len(set(answers))} | {f1:.3f} |")


if __name__ == "__main__":
    main()
