"""Shared fixtures: tiny models built in code, tiny task folders written on the fly."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("DFWE_PROGRESS", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

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
def small_task(tmp_path: Path) -> Path:
    labels = ["neg", "neu", "pos"]
    return write_task(tmp_path / "small", {"train": friends_rows("tr", labels, 20), "dev": friends_rows("dv", labels, 5),
                                           "test": friends_rows("te", labels, 5)})


@pytest.fixture
def tiny_base(tmp_path: Path) -> Path:
    """A tiny randomly initialised BERT classifier folder with a word-level tokenizer."""
    from dfwe.models import build_tiny_base

    return build_tiny_base(tmp_path / "tiny-base", WORDS + ["ross", "rachel", "hi", ":"], hidden_size=16,
                           num_layers=2, num_heads=2, intermediate_size=32, seed=0)


def perturbed_copies(base: Path, out: Path, count: int, scale: float = 0.05) -> list[Path]:
    """``count`` copies of a model folder with seeded random perturbations of every weight (3 labels)."""
    from dfwe.models import load_classifier, load_tokenizer, save_classifier

    folders = []
    for i in range(count):
        torch.manual_seed(100 + i)
        model = load_classifier(base, ["neg", "neu", "pos"])
        with torch.no_grad():
            for param in model.parameters():
                param.add_(scale * torch.randn_like(param))
        folders.append(save_classifier(model, load_tokenizer(base), out / f"ckpt{i}"))
    return folders
