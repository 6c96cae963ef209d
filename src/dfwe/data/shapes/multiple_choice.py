"""Multiple choice: which of an example's choices answers its question about a context.

Records have ``question`` (a cloze sentence whose ``@placeholder`` the right choice fills, or a plain
question), ``context``, ``choices`` (at least two distinct strings) and ``label`` (one of the choices).
Every choice is encoded as its own pair: the question with the choice filled in (or followed by it), and
the context keeping its beginning. Examples with fewer choices than the set's most are padded with empty
choices (length 0), which score the dtype's minimum and are never chosen. One score per choice from pooled
features; softmax over the choices; cross-entropy; accuracy.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from transformers import AutoModelForMultipleChoice

from dfwe.data.encode import Batch, EncodedSet, Preprocessing, encode_pairs
from dfwe.data.records import Example, Task
from dfwe.data.shapes.base import TaskShape
from dfwe.errors import BadInput
from dfwe.modeling import DfweForMultipleChoice, DfwePreTrainedModel
from dfwe.stats import MetricStats, mean_stats

PLACEHOLDER = "@placeholder"


def fill(question: str, choice: str) -> str:
    """The question with ``choice`` in place of ``@placeholder``, or followed by it when it has none."""
    return question.replace(PLACEHOLDER, choice) if PLACEHOLDER in question else f"{question} {choice}"


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
        owner = [i for i, e in enumerate(examples) for _ in e.choices]
        firsts = [fill(e.text, choice) for e in examples for choice in e.choices]
        contexts = [examples[i].context for i in owner]
        ids, types, cut = [], [], set()
        if firsts:  # the tokenizer refuses an empty batch
            ids, types, _ = encode_pairs(tokenizer, firsts, contexts, prep.max_length, keep="start")
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
        labels = torch.tensor([e.choices.index(e.label) for e in examples], dtype=torch.long)
        return EncodedSet(ids=tuple(e.id for e in examples), input_ids=input_ids, token_type_ids=token_types,
                          lengths=row_lengths, labels=labels, pad_id=pad, truncated=len(cut))

    def features(self, model: DfwePreTrainedModel, batch: Batch) -> torch.Tensor:
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
        return logits.masked_fill(batch.attention_mask.sum(dim=-1) == 0, torch.finfo(logits.dtype).min)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(logits, labels)

    def decode(self, logits: np.ndarray, data: EncodedSet, examples: Sequence[Example], task: Task) -> list[Any]:
        # only the example's own choices are candidates, whatever the padded columns hold
        return [e.choices[int(np.argmax(row[: len(e.choices)]))] for row, e in zip(logits, examples)]

    def metric_stats(self, predictions: Sequence[Any], examples: Sequence[Example], task: Task) -> MetricStats:
        return mean_stats([float(p == e.label) for p, e in zip(predictions, examples)], "accuracy")
