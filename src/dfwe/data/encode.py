"""Tokenisation, done once per example set and reused by every model that reads it.

An :class:`EncodedSet` keeps token ids padded to the set's longest example plus the true lengths, so a
batch is a slice trimmed to its own longest member (dynamic padding). Evaluation batches examples of
similar length together; training batches are shuffled with the run's seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch

from dfwe.data.tasks import Example
from dfwe.errors import BadInput


@dataclass(frozen=True)
class EncodedSet:
    """Token ids, token types and labels of one example set."""

    ids: tuple[str, ...]
    input_ids: torch.Tensor  # [n, max_len], padded with pad_id
    token_type_ids: torch.Tensor  # [n, max_len]
    lengths: torch.Tensor  # [n]
    labels: torch.Tensor  # [n], index into the task's label tuple
    pad_id: int
    # [n, num_labels] booleans: which labels each row may take (multitask sets mix label spaces); None = all
    allowed: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, rows: Sequence[int] | np.ndarray) -> "EncodedSet":
        rows_t = torch.as_tensor(np.asarray(rows, dtype=np.int64))
        width = int(self.lengths[rows_t].max()) if len(rows_t) else 1
        return EncodedSet(
            ids=tuple(self.ids[i] for i in rows_t.tolist()),
            input_ids=self.input_ids[rows_t, :width],
            token_type_ids=self.token_type_ids[rows_t, :width],
            lengths=self.lengths[rows_t],
            labels=self.labels[rows_t],
            pad_id=self.pad_id,
            allowed=None if self.allowed is None else self.allowed[rows_t],
        )


@dataclass(frozen=True)
class Batch:
    """One padded batch; ``rows`` are its positions in the encoded set."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    token_type_ids: torch.Tensor
    labels: torch.Tensor
    rows: torch.Tensor
    allowed: torch.Tensor | None = None

    def to(self, device: torch.device) -> "Batch":
        moved = (t.to(device, non_blocking=True) for t in (self.input_ids, self.attention_mask, self.token_type_ids,
                                                          self.labels, self.rows))
        return Batch(*moved, allowed=None if self.allowed is None else self.allowed.to(device, non_blocking=True))

    def restrict(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits with each row's disallowed labels masked out (no-op for single-task sets)."""
        return logits if self.allowed is None else logits.masked_fill(~self.allowed, float("-inf"))

    def model_inputs(self) -> dict[str, torch.Tensor]:
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask, "token_type_ids": self.token_type_ids}


def encode(examples: Sequence[Example], tokenizer, label_index: dict[str, int], max_length: int) -> EncodedSet:
    """Tokenise ``examples`` once: context (truncated from its oldest end) then the text itself."""
    unknown = sorted({e.label for e in examples} - set(label_index))
    if unknown:
        raise BadInput(f"label(s) {unknown} are not in the task's label set {sorted(label_index)}")
    tokenizer.truncation_side = "left"  # drop the oldest context first, never the utterance
    with_context = [i for i, e in enumerate(examples) if e.context]
    without = [i for i, e in enumerate(examples) if not e.context]
    rows: list[list[int]] = [[] for _ in examples]
    types: list[list[int]] = [[] for _ in examples]
    if with_context:
        out = tokenizer([examples[i].context for i in with_context], [examples[i].text for i in with_context],
                        truncation="only_first", max_length=max_length, return_token_type_ids=True)
        for j, i in enumerate(with_context):
            rows[i], types[i] = out["input_ids"][j], out["token_type_ids"][j]
    if without:
        out = tokenizer([examples[i].text for i in without], truncation=True, max_length=max_length,
                        return_token_type_ids=True)
        for j, i in enumerate(without):
            rows[i], types[i] = out["input_ids"][j], out["token_type_ids"][j]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
    width = int(lengths.max()) if len(rows) else 1
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    token_type_ids = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (r, t) in enumerate(zip(rows, types)):
        input_ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        token_type_ids[i, : len(t)] = torch.tensor(t, dtype=torch.long)
    labels = torch.tensor([label_index[e.label] for e in examples], dtype=torch.long)
    return EncodedSet(tuple(e.id for e in examples), input_ids, token_type_ids, lengths, labels, pad_id)


def _make_batch(data: EncodedSet, rows: np.ndarray) -> Batch:
    rows_t = torch.as_tensor(rows, dtype=torch.long)
    width = int(data.lengths[rows_t].max())
    input_ids = data.input_ids[rows_t, :width]
    mask = (torch.arange(width)[None, :] < data.lengths[rows_t][:, None]).long()
    allowed = None if data.allowed is None else data.allowed[rows_t]
    return Batch(input_ids, mask, data.token_type_ids[rows_t, :width], data.labels[rows_t], rows_t, allowed)


def eval_batches(data: EncodedSet, batch_size: int) -> Iterator[Batch]:
    """Batches of similar length, in a fixed order; ``Batch.rows`` maps results back."""
    order = np.argsort(data.lengths.numpy(), kind="stable")
    for start in range(0, len(order), batch_size):
        yield _make_batch(data, order[start : start + batch_size])


def train_batches(data: EncodedSet, batch_size: int, rng: np.random.Generator) -> Iterator[Batch]:
    """Shuffled batches; within windows of 50 batches examples are grouped by length to cut padding."""
    order = rng.permutation(len(data))
    window = batch_size * 50
    batches = []
    for start in range(0, len(order), window):
        chunk = order[start : start + window]
        chunk = chunk[np.argsort(data.lengths.numpy()[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    for index in rng.permutation(len(batches)):
        yield _make_batch(data, batches[index])


def multitask(sets: Sequence[EncodedSet], label_counts: Sequence[int]) -> EncodedSet:
    """Stack several tasks' sets into one over the concatenated label space ``task0 labels, task1 labels, ...``.

    Each row keeps its own task's labels (shifted by the task's offset) and may only take those.
    """
    width = max(s.input_ids.shape[1] for s in sets)
    pad = sets[0].pad_id
    offsets = np.concatenate([[0], np.cumsum(label_counts)[:-1]]).astype(int)
    allowed = torch.zeros((sum(len(s) for s in sets), int(sum(label_counts))), dtype=torch.bool)
    row = 0
    for s, offset, count in zip(sets, offsets, label_counts):
        allowed[row : row + len(s), offset : offset + count] = True
        row += len(s)

    def widen(t: torch.Tensor, fill: int) -> torch.Tensor:
        return torch.nn.functional.pad(t, (0, width - t.shape[1]), value=fill)

    return EncodedSet(
        ids=tuple(i for s in sets for i in s.ids),
        input_ids=torch.cat([widen(s.input_ids, pad) for s in sets]),
        token_type_ids=torch.cat([widen(s.token_type_ids, 0) for s in sets]),
        lengths=torch.cat([s.lengths for s in sets]),
        labels=torch.cat([s.labels + int(offset) for s, offset in zip(sets, offsets)]),
        pad_id=pad,
        allowed=allowed,
    )
