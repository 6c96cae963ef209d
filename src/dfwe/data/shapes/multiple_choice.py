"""Multiple choice: which of an example's choices answers its question about a context.

Records have ``question`` (a cloze sentence whose ``@placeholder`` the right choice fills, or a plain
question), ``context``, ``choices`` (at least two distinct strings) and ``label`` (one of the choices).
Two encodings (``data.choice_encoding``, recorded with every model):

* ``pairs`` (the default, transformers' convention): every choice is its own pair, the question with the
  choice filled in (or followed by it) and the context keeping its beginning; a choice scores from its pair's
  pooled features. An example costs one input per choice.
* ``mentions``: one input per example, the question followed by the list of choices, then the context; a
  choice scores from the mean token state at its mentions (its place in the list, and each occurrence of it, or
  of its first word when no other choice shares that, in the context). Made for clozes whose choices are the
  entities of the context (FETA's reading comprehension): the context is read once, not once per choice.

Examples with fewer choices than the set's most are padded with empty choices, which score the dtype's minimum
and are never chosen. Softmax over the choices; cross-entropy; accuracy.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, Sequence

import numpy as np
import torch
from transformers import AutoModelForMultipleChoice

from dfwe.data.encode import Batch, EncodedSet, Preprocessing, encode_pairs, pad_rows
from dfwe.data.records import Example, Task
from dfwe.data.shapes.base import TaskShape
from dfwe.errors import BadInput
from dfwe.modeling import DfweForMultipleChoice, DfwePreTrainedModel
from dfwe.stats import MetricStats, mean_stats

PLACEHOLDER = "@placeholder"


def fill(question: str, choice: str) -> str:
    """The question with ``choice`` in place of ``@placeholder``, or followed by it when it has none."""
    return question.replace(PLACEHOLDER, choice) if PLACEHOLDER in question else f"{question} {choice}"


CHOICE_SEPARATOR = " | "


def _occurrences(name: str, text: str) -> list[tuple[int, int]]:
    """Character spans of ``name`` in ``text`` as a whole word (not inside a longer word)."""
    return [(m.start(), m.end()) for m in re.finditer(rf"(?<!\w){re.escape(name)}(?!\w)", text)]


def mention_spans(question: str, choices: Sequence[str], context: str
                  ) -> tuple[str, list[list[tuple[int, int, int]]]]:
    """The first segment of a one-input-per-example encoding (the question, then every choice) and, per choice,
    the ``(segment, start, end)`` character spans of its mentions: its place in that list (always there, so
    every choice has one), and each occurrence in the context of the choice or of its first word (a first name,
    when no other choice starts with it)."""
    first, listed = question + CHOICE_SEPARATOR.rstrip(), []
    for choice in choices:
        first += " " if not listed else CHOICE_SEPARATOR
        listed.append((0, len(first), len(first) + len(choice)))
        first += choice
    heads = Counter(choice.split()[0] for choice in choices)
    spans = []
    for choice, place in zip(choices, listed):
        names = [choice]
        head = choice.split()[0]
        if head != choice and heads[head] == 1 and head not in choices and len(head) > 1:
            names.append(head)
        found = sorted({span for name in names for span in _occurrences(name, context)})
        spans.append([place] + [(1, start, end) for start, end in found])
    return first, spans


class MultipleChoice(TaskShape):
    name = "multiple_choice"
    auto_class = AutoModelForMultipleChoice
    model_class = DfweForMultipleChoice
    metrics = ("accuracy",)

    def parse(self, record: dict[str, Any], where: str, context_turns: int) -> Example:
        question, context, choices = record.get("question"), record.get("context"), record.get("choices")
        if not isinstance(question, str) or not isinstance(context, str):
            raise BadInput(f"{where}: fields 'question' and 'context' must be strings")
        if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c for c in choices):
            raise BadInput(f"{where}: field 'choices' must be a list of at least two non-empty strings, "
                           f"got {choices!r}")
        if len(set(choices)) != len(choices):
            raise BadInput(f"{where}: field 'choices' repeats a choice ({choices!r}); list each choice once")
        label = record.get("label")
        if label not in choices:
            raise BadInput(f"{where}: label {label!r} is not one of the choices {choices!r}; make 'label' one of them")
        return Example(id=str(record["id"]), text=question, context=context, context_keep="start", label=label,
                       choices=tuple(choices), dialogue_id=str(record.get("dialogue_id") or ""))

    def num_outputs(self, task: Task) -> int:
        return 1

    def encode(self, examples: Sequence[Example], tokenizer: Any, task: Task, prep: Preprocessing) -> EncodedSet:
        if prep.choices == "mentions":
            return self._encode_mentions(examples, tokenizer, task, prep)
        owner = [i for i, e in enumerate(examples) for _ in e.choices]
        firsts = [fill(e.text, choice) for e in examples for choice in e.choices]
        contexts = [examples[i].context for i in owner]
        ids, types, cut = [], [], set()
        if firsts:  # the tokenizer refuses an empty batch
            pairs = encode_pairs(tokenizer, firsts, contexts, prep.max_length, keep="start")
            ids, types = pairs.ids, pairs.types
            # encode_pairs counts cut (question, choice) rows; an example counts once, by the same rule: its
            # first segment left no room for the context, or did not fit even alone
            lengths = [len(t) for t in tokenizer(firsts, add_special_tokens=False)["input_ids"]]
            pair_room = prep.max_length - tokenizer.num_special_tokens_to_add(pair=True)
            single_room = prep.max_length - tokenizer.num_special_tokens_to_add(pair=False)
            cut = {owner[j] for j, n in enumerate(lengths) if n > single_room or (contexts[j] and n >= pair_room)}
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        choices = max((len(e.choices) for e in examples), default=1)
        width = max((len(r) for r in ids), default=1)
        input_ids = torch.full((len(examples), choices, width), pad, dtype=torch.long)
        token_types = torch.zeros((len(examples), choices, width), dtype=torch.long)
        row_lengths = torch.zeros((len(examples), choices), dtype=torch.long)
        slot = 0
        for j, (row_ids, row_types) in enumerate(zip(ids, types)):
            slot = slot + 1 if j and owner[j] == owner[j - 1] else 0
            input_ids[owner[j], slot, : len(row_ids)] = torch.as_tensor(row_ids, dtype=torch.long)
            token_types[owner[j], slot, : len(row_types)] = torch.as_tensor(row_types, dtype=torch.long)
            row_lengths[owner[j], slot] = len(row_ids)
        return EncodedSet(ids=tuple(e.id for e in examples), input_ids=input_ids, token_type_ids=token_types,
                          lengths=row_lengths, labels=self._labels(examples), pad_id=pad, truncated=len(cut))

    def _encode_mentions(self, examples: Sequence[Example], tokenizer: Any, task: Task,
                         prep: Preprocessing) -> EncodedSet:
        """One row per example (:func:`mention_spans`' first segment, then the context keeping its beginning) and
        the tokens that mention each choice. A choice whose every mention was cut (its place in the list
        included: the question and choices did not fit) is read at the first token, and its example counts as
        truncated."""
        if not getattr(tokenizer, "is_fast", False):
            raise BadInput(f"task {task.name}: data.choice_encoding 'mentions' needs a fast tokenizer (character "
                           "offsets of tokens); use data.choice_encoding: pairs")
        mentions = [mention_spans(e.text, e.choices, e.context) for e in examples]
        pairs = encode_pairs(tokenizer, [first for first, _ in mentions], [e.context for e in examples],
                             prep.max_length, keep="start", spans=True)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        input_ids = pad_rows(pairs.ids, pad)
        choice_tokens = torch.zeros((len(examples), max((len(e.choices) for e in examples), default=1),
                                     input_ids.shape[1]), dtype=torch.bool)
        cut = set()
        for i, (token_spans, (_, choice_spans)) in enumerate(zip(pairs.spans, mentions)):
            for c, spans in enumerate(choice_spans):
                hits = [t for t, where in enumerate(token_spans) if where is not None and where[2] > where[1]
                        and any(where[0] == segment and where[1] < end and where[2] > start
                                for segment, start, end in spans)]
                if not hits:
                    hits = [0]
                    cut.add(i)
                choice_tokens[i, c, hits] = True
        return EncodedSet(ids=tuple(e.id for e in examples), input_ids=input_ids, token_type_ids=pad_rows(pairs.types, 0),
                          lengths=torch.tensor([len(r) for r in pairs.ids], dtype=torch.long),
                          labels=self._labels(examples), pad_id=pad, choice_tokens=choice_tokens, truncated=len(cut))

    @staticmethod
    def _labels(examples: Sequence[Example]) -> torch.Tensor:
        return torch.tensor([e.choices.index(e.label) for e in examples], dtype=torch.long)

    def features(self, model: DfwePreTrainedModel, batch: Batch) -> torch.Tensor:
        if batch.choice_tokens is not None:  # mentions: one row per example, each choice read at its mentions
            tokens = model.features(**batch.model_inputs(), pooled=False, **batch.trunk_inputs())
            return model.choice_features(tokens, batch.choice_tokens)
        rows, choices, width = batch.input_ids.shape
        ids, mask, types = (t.reshape(rows * choices, width) for t in
                            (batch.input_ids, batch.attention_mask, batch.token_type_ids))
        # only real choices go through the body: padding to the set's most choices would otherwise multiply the
        # work, and a padded choice has no token to attend to (some attention kernels give NaN there, which would
        # reach the head's gradient even though its logit is masked); a padded choice reads zeros
        real = mask.sum(dim=-1) > 0
        trunk = {}
        if batch.states is not None:  # the frozen trunk's output of each real choice
            trunk = {"states": batch.states.reshape(rows * choices, width, -1)[real], "depth": batch.depth}
        pooled = model.features(ids[real], mask[real], types[real], **trunk)
        out = pooled.new_zeros((rows * choices, pooled.shape[-1]))
        out[real] = pooled
        return out.view(rows, choices, -1)

    def head_logits(self, model: DfwePreTrainedModel, features: torch.Tensor, batch: Batch) -> torch.Tensor:
        logits = model.head(model.dropout(features)).squeeze(-1).float()  # [rows, choices]
        real = (batch.choice_tokens.any(dim=-1) if batch.choice_tokens is not None
                else batch.attention_mask.sum(dim=-1) > 0)
        return logits.masked_fill(~real, torch.finfo(logits.dtype).min)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(logits, labels)

    def decode(self, logits: np.ndarray, data: EncodedSet, examples: Sequence[Example], task: Task) -> list[Any]:
        # only the example's own choices are candidates, whatever the padded columns hold
        return [e.choices[int(np.argmax(row[: len(e.choices)]))] for row, e in zip(logits, examples)]

    def metric_stats(self, predictions: Sequence[Any], examples: Sequence[Example], task: Task) -> MetricStats:
        return mean_stats([float(p == e.label) for p, e in zip(predictions, examples)], "accuracy")
