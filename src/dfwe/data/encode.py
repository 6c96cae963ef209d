"""Token ids, done once per example set and reused by every model that reads it.

An :class:`EncodedSet` keeps token ids padded to the set's longest row plus the true lengths, so a batch is
a slice trimmed to its own longest member (dynamic padding). A row is one model input: an example, or one
window of a long example (spans), and its token ids may carry a choice axis (multiple choice,
``[rows, choices, tokens]``). Evaluation batches rows of similar length together; training batches are
shuffled with the run's seed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields
from typing import Annotated, Iterator, Literal, NamedTuple, Sequence

import numpy as np
import torch
from pydantic import Field

from dfwe.schema import Frozen, validated

# The bounds of every preprocessing value a user gives (the config's data section, the commands' flags, a
# model's dfwe.json): one set, here.
MaxLength = Annotated[int, Field(ge=8, description="tokens per input")]
ContextTurns = Annotated[int, Field(ge=0, description="preceding dialogue turns read with an utterance")]
Stride = Annotated[int, Field(ge=1, description="tokens shared by consecutive windows of a long context")]
CHOICE_ENCODINGS = ("pairs", "mentions")
ChoiceEncoding = Literal[CHOICE_ENCODINGS]  # type: ignore[valid-type]


@dataclass(frozen=True)
class Preprocessing:
    """How examples become tokens; carried with every model dfwe writes (``dfwe.json``)."""

    max_length: int = 128
    context_turns: int = 3
    stride: int = 64  # spans: tokens shared by consecutive windows of a long context
    # multiple choice: "pairs" encodes every choice with the context (one input per choice); "mentions" encodes
    # the question, the choices and the context once and reads each choice at its mentions
    choices: str = "pairs"

    def overridden(self, origin: str, **values: int | None) -> "Preprocessing":
        """This preprocessing with the given values (None: keep); one outside its bounds is bad input naming
        ``origin`` (where the values came from) and the value."""
        given = validated(PreprocessingValues, values, origin)
        return Preprocessing(**{**self.__dict__, **given.model_dump(exclude_none=True)})


class PreprocessingValues(Frozen):
    """Preprocessing values as a user gives them, each within its bounds (None: not given)."""

    max_length: MaxLength | None = None
    context_turns: ContextTurns | None = None
    stride: Stride | None = None
    choices: ChoiceEncoding | None = None


@dataclass(frozen=True)
class TrunkStates:
    """What a frozen trunk (the embeddings and the lower ``depth`` encoder layers) outputs for every row of an
    encoded set, computed once and held on disk.

    Row ``r`` (or choice ``c`` of row ``r``) has its ``[length, H]`` states at ``chunks[chunk][offset:offset +
    length]``, ``(chunk, offset) = where[r(, c)]``; rows are stored unpadded, so a batch gathers exactly its rows
    into a zero-padded array. The chunks are memory maps: holding a set's states costs no memory.
    """

    chunks: tuple[np.ndarray, ...]  # [tokens, H] each
    where: np.ndarray  # [rows, 2] or [rows, choices, 2]: chunk index and first token of every row
    depth: int  # encoder layers the trunk applied (0: the embeddings only)
    key: str  # the trunk's content key (base, depth, dtype): what artefacts built on these states are keyed by

    def subset(self, rows: np.ndarray) -> "TrunkStates":
        return TrunkStates(self.chunks, self.where[rows], self.depth, self.key)

    def gather(self, rows: np.ndarray, lengths: np.ndarray, width: int) -> np.ndarray:
        """``[n, (choices,) width, H]`` float32 states of ``rows`` (``lengths`` theirs), zero where padded."""
        where = self.where[rows]
        hidden = self.chunks[0].shape[-1] if self.chunks else 0
        out = np.zeros((*lengths.shape, width, hidden), dtype=np.float32)
        for index in np.ndindex(*lengths.shape):
            length = int(lengths[index])
            if length:
                chunk, offset = where[index]
                out[index][:length] = self.chunks[chunk][offset:offset + length]
        return out


@dataclass(frozen=True)
class EncodedSet:
    """Token ids, token types and targets of one example set (see the task shape for what targets mean)."""

    ids: tuple[str, ...]  # the example id of every row
    input_ids: torch.Tensor  # [rows, L] or [rows, choices, L], padded with pad_id
    token_type_ids: torch.Tensor  # same shape as input_ids
    lengths: torch.Tensor  # [rows] or [rows, choices]; 0 marks a padded choice
    labels: torch.Tensor  # [rows] class index, [rows, labels] 0/1, or [rows, 2] start/end token
    pad_id: int
    example_of: torch.Tensor | None = None  # [rows] index of the example a window belongs to (spans)
    offsets: torch.Tensor | None = None  # [rows, L, 2] character span of each context token, -1 elsewhere
    truncated: int = 0  # examples whose own text (not only their context) was cut to fit max_length
    # multiple choice read at mentions: [rows, choices, L], which tokens mention each choice (none: padded choice)
    choice_tokens: torch.Tensor | None = None
    # a frozen trunk's output for every row (model.trainable_layers): what a model then reads instead of tokens
    states: TrunkStates | None = None

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def num_examples(self) -> int:
        return len(self) if self.example_of is None else int(self.example_of.max()) + 1 if len(self) else 0

    def subset(self, rows: Sequence[int] | np.ndarray) -> "EncodedSet":
        """The given rows (whole examples: a span example's windows must be taken together)."""
        index = torch.as_tensor(np.asarray(rows, dtype=np.int64))
        width = max(1, int(self.lengths[index].max())) if len(index) else 1
        example_of = None
        if self.example_of is not None:  # renumber the kept examples 0..m-1 in order of appearance
            kept = self.example_of[index]
            _, example_of = torch.unique_consecutive(kept, return_inverse=True)
        return EncodedSet(
            ids=tuple(self.ids[i] for i in index.tolist()),
            input_ids=self.input_ids[index, ..., :width],
            token_type_ids=self.token_type_ids[index, ..., :width],
            lengths=self.lengths[index],
            labels=self.labels[index],
            pad_id=self.pad_id,
            example_of=example_of,
            offsets=None if self.offsets is None else self.offsets[index, :width],
            truncated=0,
            choice_tokens=None if self.choice_tokens is None else self.choice_tokens[index, :, :width],
            states=None if self.states is None else self.states.subset(index.numpy()),
        )

    def trunk_parts(self) -> dict[str, str]:
        """What an artefact trained or scored on this set adds to its content key for the trunk it read through."""
        return {"trunk": self.states.key} if self.states is not None else {}

    def digest(self) -> str:
        """A hash of everything a model sees when it trains or scores on this set (not the example ids, nor
        trunk states, which artefacts built on them name by the trunk that made them).

        Two sets with the same digest train the same model, so cached artefacts are keyed by it: edit a label
        or a text, change the tokenizer or max_length, and the digest changes.
        """
        hasher = hashlib.sha256()
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, torch.Tensor):
                hasher.update(f"{field.name}{tuple(value.shape)}{value.dtype}".encode())
                hasher.update(value.contiguous().numpy().tobytes())
        hasher.update(str(self.pad_id).encode())
        return hasher.hexdigest()


@dataclass(frozen=True)
class Batch:
    """One padded batch; ``rows`` are its positions in the encoded set."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    token_type_ids: torch.Tensor
    labels: torch.Tensor
    rows: torch.Tensor
    states: torch.Tensor | None = None  # the frozen trunk's output [rows, (choices,) L, H], when the set has it
    depth: int = 0  # encoder layers those states have been through
    choice_tokens: torch.Tensor | None = None  # [rows, choices, L]: each choice's mentions (multiple choice)

    def to(self, device: torch.device) -> "Batch":
        moved = (t.to(device, non_blocking=True) for t in (self.input_ids, self.attention_mask, self.token_type_ids,
                                                          self.labels, self.rows))
        states, choices = (None if t is None else t.to(device, non_blocking=True)
                           for t in (self.states, self.choice_tokens))
        return Batch(*moved, states, self.depth, choices)

    def model_inputs(self) -> dict[str, torch.Tensor]:
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask, "token_type_ids": self.token_type_ids}

    def trunk_inputs(self) -> dict[str, torch.Tensor | int | None]:
        """What a model reads instead of running its frozen trunk (nothing when the set has no states)."""
        return {"states": self.states, "depth": self.depth} if self.states is not None else {}


def pad_rows(rows: Sequence[Sequence[int]], fill: int) -> torch.Tensor:
    """Ragged lists of ids as one ``[n, longest]`` tensor."""
    width = max((len(r) for r in rows), default=1) or 1
    out = torch.full((len(rows), width), fill, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.as_tensor(row, dtype=torch.long)
    return out


class EncodedPairs(NamedTuple):
    """What :func:`encode_pairs` returns: per text its ids and token types, how many texts were cut, and (when
    asked for) every token's ``(segment, start, end)`` character span in its own segment (None: a special token)."""

    ids: list[list[int]]
    types: list[list[int]]
    cut: int
    spans: list[list[tuple[int, int, int] | None]] | None = None


def encode_pairs(tokenizer, texts: Sequence[str], contexts: Sequence[str], max_length: int,
                 keep: str = "end", spans: bool = False) -> EncodedPairs:
    """Token ids and types of ``text`` (first segment) with its ``context`` (second segment, may be empty).

    The context is cut first: ``keep="end"`` keeps its most recent end (dialogue history, oldest first),
    ``keep="start"`` its beginning (a scene listed most recent turn first). A text that does not fit even
    alone is cut at its end and loses its context. ``spans`` also returns where each token came from (needs a
    fast tokenizer).
    """
    if not texts:  # the tokenizer refuses an empty batch
        return EncodedPairs([], [], 0, [] if spans else None)
    text_lengths = [len(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]
    pair_room = max_length - tokenizer.num_special_tokens_to_add(pair=True)
    paired = [i for i, (length, context) in enumerate(zip(text_lengths, contexts)) if context and length < pair_room]
    alone = sorted(set(range(len(texts))) - set(paired))
    ids: list[list[int]] = [[] for _ in texts]
    types: list[list[int]] = [[] for _ in texts]
    where: list[list[tuple[int, int, int] | None]] = [[] for _ in texts]
    side = tokenizer.truncation_side
    try:
        for rows, pair in ((paired, True), (alone, False)):
            if not rows:
                continue
            # a pair cuts its context on the side it keeps; an over-long text alone keeps its beginning
            tokenizer.truncation_side = ("left" if keep == "end" else "right") if pair else "right"
            second = [contexts[i] for i in rows] if pair else None
            out = tokenizer([texts[i] for i in rows], second, truncation="only_second" if pair else True,
                            max_length=max_length, return_token_type_ids=True, return_offsets_mapping=spans)
            for j, i in enumerate(rows):
                ids[i], types[i] = out["input_ids"][j], out["token_type_ids"][j]
                if spans:
                    where[i] = [None if segment is None else (segment, begin, end)
                                for segment, (begin, end) in zip(out.sequence_ids(j), out["offset_mapping"][j])]
    finally:
        tokenizer.truncation_side = side
    single_room = max_length - tokenizer.num_special_tokens_to_add(pair=False)
    cut = sum(1 for i in alone if text_lengths[i] > single_room or contexts[i])
    return EncodedPairs(ids, types, cut, where if spans else None)


def _make_batch(data: EncodedSet, rows: np.ndarray, with_states: bool = True) -> Batch:
    index = torch.as_tensor(rows, dtype=torch.long)
    lengths = data.lengths[index]
    width = max(1, int(lengths.max()))
    mask = (torch.arange(width) < lengths.unsqueeze(-1)).long()
    states = (None if data.states is None or not with_states else
              torch.from_numpy(data.states.gather(np.asarray(rows), lengths.numpy(), width)))
    choices = None if data.choice_tokens is None else data.choice_tokens[index, :, :width]
    return Batch(data.input_ids[index, ..., :width], mask, data.token_type_ids[index, ..., :width],
                 data.labels[index], index, states, data.states.depth if data.states is not None else 0, choices)


def _row_lengths(data: EncodedSet) -> np.ndarray:
    lengths = data.lengths.numpy()
    return lengths if lengths.ndim == 1 else lengths.max(axis=1)


def full_batch(data: EncodedSet) -> Batch:
    """Every row of ``data`` as one batch, in row order: its tokens, masks and targets, not its trunk states (what a
    head fitted on precomputed features reads; gathering the states of a whole long-input set would copy
    gigabytes for nothing)."""
    return _make_batch(data, np.arange(len(data)), with_states=False)


def eval_batches(data: EncodedSet, batch_size: int) -> Iterator[Batch]:
    """Batches of similar length, in a fixed order; ``Batch.rows`` maps results back."""
    order = np.argsort(_row_lengths(data), kind="stable")
    for start in range(0, len(order), batch_size):
        yield _make_batch(data, order[start : start + batch_size])


def train_batches(data: EncodedSet, batch_size: int, rng: np.random.Generator) -> list[Batch]:
    """One epoch of shuffled batches; within windows of 50 batches rows are grouped by length to cut padding."""
    order = rng.permutation(len(data))
    lengths = _row_lengths(data)
    window = batch_size * 50
    batches = []
    for start in range(0, len(order), window):
        chunk = order[start : start + window]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    return [_make_batch(data, batches[index]) for index in rng.permutation(len(batches))]
