"""Granularity: which parameters share one interpolation weight.

* ``model``: one group, one weight per ingredient;
* ``layer``: embeddings, each transformer layer, and the head (pooler + classifier);
* ``block``: embeddings, blocks of ``block_size`` consecutive layers, the head;
* ``kind``: embeddings, attention, feed-forward, norms, head.

Weights are then a ``[groups x ingredients]`` array.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from dfwe.errors import BadInput

_LAYER = re.compile(r"\.(?:layer|layers|h|block|blocks)\.(\d+)\.")
KINDS = ("embeddings", "attention", "feed_forward", "norms", "head")
GRANULARITIES = ("model", "layer", "block", "kind")


def layer_index(name: str) -> int | None:
    """The transformer layer a parameter belongs to, if any."""
    match = _LAYER.search(f".{name}")
    return int(match.group(1)) if match else None


def parameter_kind(name: str) -> str:
    """One of :data:`KINDS` for a parameter name (BERT/RoBERTa/MiniLM naming, and common variants)."""
    lowered = name.lower()
    if lowered.startswith(("head.", "classifier.", "pre_classifier.", "score.")) or ".pooler." in f".{lowered}":
        return "head"
    if "embed" in lowered and layer_index(name) is None:
        return "embeddings"
    if "norm" in lowered:
        return "norms"
    if "attention" in lowered or "attn" in lowered:
        return "attention"
    return "feed_forward"


def group_of(name: str, granularity: str, block_size: int = 1) -> str:
    """The group label of one parameter under ``granularity``."""
    if granularity == "model":
        return "all"
    kind = parameter_kind(name)
    if granularity == "kind":
        return kind
    if granularity not in GRANULARITIES:
        raise BadInput(f"granularity: unknown value '{granularity}' (use {', '.join(GRANULARITIES)})")
    if kind in ("embeddings", "head"):
        return kind
    index = layer_index(name)
    if index is None:  # e.g. a final encoder norm outside the layers: it travels with the head side
        return "head"
    if granularity == "layer":
        return f"layer.{index}"
    first = index - index % block_size
    return f"layers.{first}-{first + block_size - 1}"


@dataclass(frozen=True)
class Grouping:
    """Group labels in order, and the group index of every parameter (in the space's order)."""

    labels: tuple[str, ...]
    index: tuple[int, ...]

    @property
    def size(self) -> int:
        return len(self.labels)


def make_grouping(names: Sequence[str], granularity: str, block_size: int = 1) -> Grouping:
    """Group ``names`` in order of first appearance."""
    if block_size < 1:
        raise BadInput(f"block_size: must be at least 1 (got {block_size})")
    per_name = [group_of(n, granularity, block_size) for n in names]
    labels = tuple(dict.fromkeys(per_name))
    position = {label: i for i, label in enumerate(labels)}
    return Grouping(labels=labels, index=tuple(position[g] for g in per_name))
