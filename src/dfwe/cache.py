"""Content keys for cached artefacts (experts, target fine-tunes, logits), and the cache of model outputs.

An artefact is stored under a key that hashes *what it was computed from*: the digests of the example sets
it read (token ids and targets, so an edited label or text, another tokenizer or max length all change it),
the content digest of the checkpoints it started from, the recipe, the seed, and the version of the code
path that produced it. Reusing an artefact therefore needs no trust in paths or ids: same key, same inputs.

Recipes enter keys without their default values, so adding a setting keeps existing keys; changing a
default, like changing what a code path computes, means bumping its entry in ``CODE_VERSIONS``.
``CODE_VERSIONS`` is bumped by hand whenever a code path starts producing different results for the same
inputs (a changed training loop, a new head scheme), so stale artefacts are never served after an upgrade.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from dfwe.io import atomic_write_bytes

CODE_VERSIONS = {"suite": 1, "tiny-base": 1, "expert": 1, "ingredient": 1, "logits": 1, "trunk": 1, "run": 1}
KEY_FILE = "dfwe-key.json"


def content_key(kind: str, **parts: Any) -> str:
    """A short hash of ``parts`` and the code version of ``kind``."""
    payload = {"kind": kind, "code_version": CODE_VERSIONS[kind], **parts}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def write_key(folder: Path, kind: str, key: str, **parts: Any) -> None:
    """Record, inside a cached artefact's folder, the key and what went into it (for people, not for lookup)."""
    (folder / KEY_FILE).write_text(json.dumps({"kind": kind, "key": key, "code_version": CODE_VERSIONS[kind],
                                               **parts}, indent=2, sort_keys=True, default=str))


def cached_logits(cache_dir: Path, key: dict[str, Any], compute: Callable[[], np.ndarray]) -> np.ndarray:
    """``compute()``, or what it returned before for the same ``key``.

    ``key`` must name everything the logits depend on by content (the checkpoints' content keys, the merge
    weights, the example set's digest); runs that share them then score each baseline once.
    """
    path = cache_dir / (hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20] + ".npy")
    if path.is_file():
        return np.load(path, allow_pickle=False)
    logits = compute()
    buffer = io.BytesIO()
    np.save(buffer, logits, allow_pickle=False)
    atomic_write_bytes(path, buffer.getvalue())
    return logits
