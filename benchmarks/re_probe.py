"""Is there relation signal in frozen all-MiniLM-L6-v2 features, and what does a linear probe need to find it?

A diagnostic for FETA-Friends' relation extraction (not a test, not the pipeline): every layer frozen, the
features of a seeded sample of train records, one logistic regression per label (scikit-learn's one-vs-rest)
at several inverse L2 strengths C, scored on the official dev split by micro F1 without ``unanswerable``, under
dfwe's multilabel decision rule (every label above one half, else the most probable one). Two poolings: the
mean over all tokens (what the model's pooler does; the dialogue dominates it) and the mean over the first
segment only ("Relations of <head> with <tail>", contextualised by the dialogue).

    python benchmarks/re_probe.py --suite ../shared/data/feta_friends --json benchmarks/results/re_probe.json
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier
from transformers import AutoModel, AutoTokenizer

from dfwe.data.records import Task
from dfwe.data.shapes import SHAPES
from dfwe.data.shapes.multilabel import label_matrix, micro_f1_stats
from dfwe.train.base import minilm_path

POOLINGS = ("mean", "first_segment")


def read_records(folder: Path, split: str) -> list[dict]:
    with gzip.open(folder / f"{split}.jsonl.gz", "rt") as f:
        return [json.loads(line) for line in f]


@torch.inference_mode()
def features(model, tokenizer, records: list[dict], pooling: str, max_length: int) -> np.ndarray:
    """L2-normalised pooled last-layer states (all-MiniLM-L6-v2 normalises its sentence embeddings)."""
    out = []
    for start in range(0, len(records), 32):
        batch = records[start:start + 32]
        encoded = tokenizer([r["text"] for r in batch], [r["text_pair"] for r in batch], padding=True,
                            truncation="only_second", max_length=max_length, return_tensors="pt")
        states = model(**encoded).last_hidden_state
        mask = encoded["attention_mask"].float()
        if pooling == "first_segment":
            mask = mask * (encoded["token_type_ids"] == 0).float()
        pooled = (states * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
    return np.concatenate(out)


def dev_micro_f1(logits: np.ndarray, dev: list[dict], task: Task) -> float:
    """Micro F1 without ``unanswerable`` under dfwe's own multilabel decoding and metric."""
    shape = SHAPES["multilabel"]
    predicted = label_matrix(shape.decode(logits, None, [], task), task.labels)
    gold = label_matrix([r["labels"] for r in dev], task.labels)
    kept = np.array([label not in task.ignore_labels for label in task.labels])
    return float(micro_f1_stats(gold, predicted, kept).value()["micro_f1"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--suite", type=Path, required=True)
    parser.add_argument("--train-examples", type=int, default=600, help="seeded sample of train records")
    parser.add_argument("--cs", type=float, nargs="+", default=[1 / 34, 1.0, 10.0, 100.0])
    parser.add_argument("--max-length", type=int, default=192)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    folder = args.suite / "relation_extraction"
    spec = json.loads((folder / "task.json").read_text())
    labels = spec["labels"]
    task = Task(name="relation_extraction", path=folder, shape="multilabel", labels=tuple(labels),
                metric="micro_f1", splits={}, ignore_labels=tuple(spec["metric_ignore_labels"]))
    train = read_records(folder, "train")
    random.Random(args.seed).shuffle(train)
    train, dev = train[:args.train_examples], read_records(folder, "dev")
    y_train = label_matrix([r["labels"] for r in train], labels)
    seen = y_train.sum(0) > 0  # a label absent from the sample gets no regression (never predicted)

    tokenizer, model = AutoTokenizer.from_pretrained(minilm_path()), AutoModel.from_pretrained(minilm_path()).eval()
    rows = []
    for pooling in POOLINGS:
        began = time.perf_counter()
        x_train = features(model, tokenizer, train, pooling, args.max_length)
        x_dev = features(model, tokenizer, dev, pooling, args.max_length)
        for c in args.cs:
            probe = OneVsRestClassifier(LogisticRegression(C=c, max_iter=3000)).fit(x_train, y_train[:, seen])
            logits = np.full((len(dev), len(labels)), -np.inf)
            logits[:, seen] = probe.decision_function(x_dev)
            rows.append({"pooling": pooling, "C": c, "dev_micro_f1": dev_micro_f1(logits, dev, task)})
            print(f"{pooling:14s} C={c:<8.4g} dev micro F1 {rows[-1]['dev_micro_f1']:.3f}", flush=True)
        print(f"  ({time.perf_counter() - began:.0f} s)", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"train_examples": len(train), "dev_examples": len(dev),
                                         "max_length": args.max_length, "seed": args.seed, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
