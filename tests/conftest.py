"""Shared fixtures: tiny models built in code, tiny task folders written on the fly."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("DFWE_PROGRESS", "0")

REPO = Path(__file__).resolve().parents[1]
FRIENDS = REPO.parent / "shared" / "data" / "friends"

WORDS = ["good", "bad", "happy", "sad", "ok", "fine", "great", "awful", "meh", "wow"]


def write_task(folder: Path, rows: dict[str, list[dict]]) -> Path:
    """Write ``{split: [records]}`` as a task folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, records in rows.items():
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


def friends_rows(prefix: str, labels: list[str], per_label: int) -> list[dict]:
    return [{"id": f"{prefix}-{label}-{i}", "dialogue_id": f"{prefix}-d{i}", "speaker": "Ross",
             "utterance": f"{WORDS[j % len(WORDS)]} {WORDS[(i + j) % len(WORDS)]}", "context": ["Rachel: hi"],
             "label": label}
            for j, label in enumerate(labels) for i in range(per_label)]


@pytest.fixture
def dfwe_here(capsys, monkeypatch):
    """``dfwe ARGS`` in this process (no interpreter start-up per call): a CompletedProcess of its exit code and
    output; this process's logging is left as it is."""
    import subprocess

    from transformers.utils import logging as hf_logging

    from dfwe import cli

    monkeypatch.setattr(cli, "_quiet_third_party", lambda: None)
    monkeypatch.setattr(hf_logging, "_tqdm_active", False)  # no loading bars on stderr (restored after)

    def call(*args: str) -> subprocess.CompletedProcess:
        capsys.readouterr()  # what the test printed before
        code = cli.main(list(args))
        captured = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, captured.out, captured.err)
    return call


@pytest.fixture
def small_task(tmp_path: Path) -> Path:
    labels = ["neg", "neu", "pos"]
    return write_task(tmp_path / "small", {"train": friends_rows("tr", labels, 20), "dev": friends_rows("dv", labels, 5),
                                           "test": friends_rows("te", labels, 5)})


LABELS = ("neg", "neu", "pos")


def small_task_spec(path: Path = Path("small")):
    """The three-label classification task that ``perturbed_copies`` models are trained for."""
    from dfwe.data.records import Task

    return Task(name="small", path=path, shape="classification", labels=LABELS, metric="weighted_f1", splits={})


@pytest.fixture
def tiny_base(tmp_path: Path) -> Path:
    """A tiny randomly initialised BERT encoder folder with a word-level tokenizer (mean pooling)."""
    from dfwe.train.base import build_tiny_base

    return build_tiny_base(tmp_path / "tiny-base", WORDS + ["ross", "rachel", "hi", ":"], hidden_size=16,
                           num_layers=2, num_heads=2, intermediate_size=32, seed=0)


def tiny_model(base: Path, seed: int = 0, labels: tuple[str, ...] = LABELS):
    """A dfwe classifier on ``base`` with a seeded head."""
    from dfwe.checkpoints import new_model, resolve_pooling

    torch.manual_seed(seed)
    return new_model(base, "classification", labels, resolve_pooling(base))


def perturbed_copies(base: Path, out: Path, count: int, scale: float = 0.05) -> list[Path]:
    """``count`` dfwe classifier folders on ``base`` with seeded random perturbations of every weight."""
    from dfwe.checkpoints import load_tokenizer, save_model
    from dfwe.data.encode import Preprocessing

    folders = []
    for i in range(count):
        model = tiny_model(base, seed=100 + i)
        with torch.no_grad():
            for param in model.parameters():
                param.add_(scale * torch.randn_like(param))
        folders.append(save_model(model, load_tokenizer(base), out / f"ckpt{i}", Preprocessing(max_length=32),
                                  small_task_spec()))
    return folders


def write_tiny_suite(root: Path, dialogues: int = 8, per_dialogue: int = 3) -> Path:
    """A tiny FETA-like suite with one task of each shape, every record in a dialogue (seeded, fixed)."""
    import random

    rng = random.Random(0)
    names = ["ross", "rachel"]

    def words(count: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(count))

    def record(shape: str, split: str, d: int, i: int) -> dict:
        base = {"id": f"{shape}-{split}-{d}-{i}", "dialogue_id": f"s01_e{d:02d}_c01"}
        if shape == "emo":
            return {**base, "speaker": rng.choice(names), "utterance": words(4), "context": [f"ross: {words(3)}"],
                    "label": rng.choice(["happy", "sad", "ok"])}
        if shape == "rel":
            return {**base, "text": f"relations of {names[0]} with {names[1]}", "text_pair": words(8),
                    "labels": rng.sample(["friends", "dates", "unanswerable"], rng.randint(1, 2))}
        if shape == "qa":
            context = f"ross : {words(20)} rachel : {words(20)}"
            start = context.index("rachel")
            return {**base, "question": f"who {words(2)}", "context": context,
                    "answers": [{"text": "rachel", "start": start}]}
        choices = names + (["hi"] if i % 2 else [])
        return {**base, "question": f"@placeholder {words(3)}", "context": f"ross : {words(10)}",
                "choices": choices, "label": rng.choice(choices)}

    specs = {"emo": None,
             "rel": {"type": "multilabel", "metric": "micro_f1", "labels": ["friends", "dates", "unanswerable"],
                     "metric_ignore_labels": ["unanswerable"]},
             "qa": {"type": "span", "metric": "token_f1"},
             "rc": {"type": "multiple_choice", "metric": "accuracy"}}
    for shape, spec in specs.items():
        rows = {split: [record(shape, split, d + 100 * n, i) for d in range(dialogues) for i in range(per_dialogue)]
                for n, split in enumerate(("train", "dev", "test"))}
        write_task(root / shape, rows)
        if spec is not None:
            (root / shape / "task.json").write_text(json.dumps(spec))
    return root


PLAIN_CLASSES = {"classification": "BertForSequenceClassification", "span": "BertForQuestionAnswering",
                 "multiple_choice": "BertForMultipleChoice"}


def tiny_suite_and_base(root: Path) -> tuple[Path, Path]:
    """:func:`write_tiny_suite` under ``root/tiny`` and a tiny base whose vocabulary covers it, ``root/base``."""
    from dfwe.train.base import build_tiny_base

    suite = write_tiny_suite(root / "tiny")
    base = build_tiny_base(root / "base", WORDS + ["ross", "rachel", "hi", ":", "who", "relations", "of", "with",
                                                   "@placeholder"], 16, 2, 2, 32, seed=0)
    return suite, base


def plain_checkpoints(out: Path, shape: str, count: int, labels: tuple[str, ...] = LABELS) -> list[Path]:
    """``count`` plain transformers BERT checkpoints of ``shape``'s class (seeded, different weights), each with a
    fast word-level tokenizer: what a user brings from anywhere."""
    import transformers
    from transformers import BertConfig, BertTokenizerFast

    vocab = out / "vocab.txt"
    out.mkdir(parents=True, exist_ok=True)
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, "ross", "rachel", "hi", ":",
                                "who", "@placeholder"]))
    tokenizer = BertTokenizerFast(vocab_file=str(vocab))
    head = ({"id2label": dict(enumerate(labels)), "label2id": {label: i for i, label in enumerate(labels)}}
            if shape == "classification" else {"num_labels": 2})
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, **head)
    folders = []
    for i in range(count):
        torch.manual_seed(200 + i)
        model = getattr(transformers, PLAIN_CLASSES[shape])(config)
        folder = out / f"{shape}-{i}"
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        folders.append(folder)
    return folders


def journal_rows(path: Path) -> list[tuple]:
    """Every journalled candidate of a search: ``(idx, x, objective, fidelity, seconds)``."""
    import sqlite3

    with sqlite3.connect(str(path)) as db:
        return db.execute("SELECT idx, x, objective, fidelity, seconds FROM candidates ORDER BY idx").fetchall()


def sigkill_mid_search(command: list[str], journal: Path, after_rows: int) -> None:
    """Run ``dfwe COMMAND`` and SIGKILL it once its journal holds ``after_rows`` candidates (or after 240 s)."""
    import signal
    import sqlite3
    import subprocess
    import sys
    import time

    process = subprocess.Popen([sys.executable, "-m", "dfwe.cli", *command], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env={**os.environ, "DFWE_PROGRESS": "0"})
    deadline = time.time() + 240
    while time.time() < deadline:
        try:
            if journal.exists() and len(journal_rows(journal)) >= after_rows:
                break
        except sqlite3.Error:  # the journal is being created
            pass
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()


@pytest.fixture
def earlier_run(tmp_path) -> Path:
    """An output folder holding an earlier run's results (bytes that no failed command may change)."""
    out = tmp_path / "out"
    for folder in ("plots", "merged"):
        (out / folder).mkdir(parents=True)
    (out / "results.json").write_text('{"methods": {"dfwe": {}}}')
    (out / "config.yaml").write_text("seed: 0\n")
    (out / "plots" / "test_scores.png").write_bytes(b"png")
    (out / "merged" / "model.safetensors").write_bytes(b"weights")
    return out
