"""Reading comprehension on frozen all-MiniLM-L6-v2 features: one encoding per choice, or one per cloze?

A diagnostic for FETA-Friends' reading comprehension (not a test, not the pipeline). Every layer frozen, a
seeded sample of train clozes, a conditional-logit probe (a softmax over an example's choices of ``w . f_c``,
L2 at inverse strength C, as dfwe's ``fit_head`` fits it), scored by accuracy on the official dev split.

* ``pairs``: what the pipeline does today, every choice its own input (the question with the choice in place
  of ``@placeholder``, then the scene), mean-pooled and normalised: 5.5 encodings per cloze.
* ``mentions``: one input per cloze, the question followed by the list of choices, then the scene; a choice's
  feature is the mean of the token states at its mentions (its place in the list and wherever it, or its first
  name, occurs in the scene), ``m_c``, alone or beside its product with the ``@placeholder`` state ``q``.

    python benchmarks/rc_probe.py --suite ../shared/data/feta_friends --json benchmarks/results/rc_probe.json
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
from transformers import AutoModel, AutoTokenizer

from dfwe.data.shapes.multiple_choice import fill
from dfwe.data.shapes.multiple_choice import mention_spans
from dfwe.train.base import minilm_path


def read_records(folder: Path, split: str) -> list[dict]:
    with gzip.open(folder / f"{split}.jsonl.gz", "rt") as f:
        return [json.loads(line) for line in f]


@torch.no_grad()
def pair_features(model, tokenizer, records: list[dict], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``[n, choices, H]`` normalised mean-pooled features of every (question with choice, scene) pair, and the
    mask of real choices."""
    most = max(len(r["choices"]) for r in records)
    out = torch.zeros(len(records), most, model.config.hidden_size)
    for i, r in enumerate(records):
        enc = tokenizer([fill(r["question"], c) for c in r["choices"]], [r["context"]] * len(r["choices"]),
                        truncation="only_second", max_length=max_length, padding=True, return_tensors="pt")
        states = model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).float()
        out[i, : len(r["choices"])] = torch.nn.functional.normalize((states * mask).sum(1) / mask.sum(1), dim=-1)
    real = torch.zeros(len(records), most, dtype=torch.bool)
    for i, r in enumerate(records):
        real[i, : len(r["choices"])] = True
    return out, real


@torch.no_grad()
def mention_features(model, tokenizer, records: list[dict], max_length: int) -> tuple[dict, torch.Tensor]:
    """Per variant ``[n, choices, F]`` features from one encoding per cloze, and the mask of real choices."""
    most = max(len(r["choices"]) for r in records)
    hidden = model.config.hidden_size
    m = torch.zeros(len(records), most, hidden)
    q = torch.zeros(len(records), hidden)
    real = torch.zeros(len(records), most, dtype=torch.bool)
    for i, r in enumerate(records):
        first, spans = mention_spans(r["question"], r["choices"], r["context"])
        enc = tokenizer(first, r["context"], truncation="only_second", max_length=max_length,
                        return_offsets_mapping=True, return_tensors="pt")
        states = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                       token_type_ids=enc["token_type_ids"]).last_hidden_state[0]
        sequence = enc.sequence_ids(0)
        offsets = enc["offset_mapping"][0].tolist()
        for c, choice_spans in enumerate(spans):
            tokens = [t for t, (seq, (a, b)) in enumerate(zip(sequence, offsets)) if seq is not None and b > a
                      and any(seq == s and a < end and b > start for s, start, end in choice_spans)]
            m[i, c] = states[tokens].mean(0)
            real[i, c] = True
        place = first.find("@placeholder")
        tokens = [t for t, (seq, (a, b)) in enumerate(zip(sequence, offsets))
                  if seq == 0 and b > a and place >= 0 and a < place + len("@placeholder") and b > place]
        q[i] = states[tokens].mean(0) if tokens else states[0]
    unit = torch.nn.functional.normalize(m, dim=-1)
    return {"m": m, "m normalised": unit, "m*q,m": torch.cat([m * q[:, None], m], dim=-1)}, real


def fit_probe(x: torch.Tensor, real: torch.Tensor, y: torch.Tensor, c: float) -> torch.Tensor:
    """The weight vector of a conditional logit over each example's real choices (L-BFGS, L2 ||w||^2 / (2 C n))."""
    w = torch.zeros(x.shape[-1], requires_grad=True)
    optimizer = torch.optim.LBFGS([w], lr=1.0, max_iter=500, tolerance_grad=1e-7, tolerance_change=1e-10,
                                  history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        logits = (x @ w).masked_fill(~real, -1e9)
        loss = torch.nn.functional.cross_entropy(logits, y) + (w**2).sum() / (2 * c * len(y))
        loss.backward()
        return loss

    optimizer.step(closure)
    return w.detach()


def accuracy(x: torch.Tensor, real: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> float:
    return float(((x @ w).masked_fill(~real, -1e9).argmax(-1) == y).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--suite", type=Path, required=True)
    parser.add_argument("--train-examples", type=int, default=900, help="seeded sample of train clozes")
    parser.add_argument("--cs", type=float, nargs="+", default=[1.0, 10.0, 100.0])
    parser.add_argument("--max-length", type=int, default=192)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--encodings", nargs="+", default=["mentions", "pairs"], choices=["mentions", "pairs"])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    folder = args.suite / "reading_comprehension"
    train = read_records(folder, "train")
    random.Random(args.seed).shuffle(train)
    train, dev = train[: args.train_examples], read_records(folder, "dev")
    labels = {name: torch.tensor([r["choices"].index(r["label"]) for r in rows]) for name, rows in
              (("train", train), ("dev", dev))}
    chance = float(np.mean([1 / len(r["choices"]) for r in dev]))
    tokenizer, model = AutoTokenizer.from_pretrained(minilm_path()), AutoModel.from_pretrained(minilm_path()).eval()
    rows = []
    for encoding in args.encodings:
        began = time.perf_counter()
        if encoding == "pairs":
            (xt, rt), (xd, rd) = (pair_features(model, tokenizer, s, args.max_length) for s in (train, dev))
            variants = {"mean": (xt, xd)}
        else:
            (ft, rt), (fd, rd) = (mention_features(model, tokenizer, s, args.max_length) for s in (train, dev))
            variants = {name: (ft[name], fd[name]) for name in ft}
        seconds = time.perf_counter() - began
        for name, (xt, xd) in variants.items():
            for c in args.cs:
                w = fit_probe(xt, rt, labels["train"], c)
                rows.append({"encoding": encoding, "features": name, "C": c, "encode_seconds": seconds,
                             "train_accuracy": accuracy(xt, rt, labels["train"], w),
                             "dev_accuracy": accuracy(xd, rd, labels["dev"], w)})
                print(f"{encoding:9s} {name:7s} C={c:<6g} train {rows[-1]['train_accuracy']:.3f} "
                      f"dev {rows[-1]['dev_accuracy']:.3f}  (encode {seconds:.0f} s)", flush=True)
    print(f"chance on dev: {chance:.3f}")
    if args.json:
        args.json.write_text(json.dumps({"train_examples": len(train), "dev_examples": len(dev), "chance": chance,
                                         "max_length": args.max_length, "seed": args.seed, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
