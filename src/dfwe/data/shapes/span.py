"""Extractive question answering: the answer is a character span of a long context.

Records have ``question``, ``context`` and ``answers`` (a non-empty list of ``{"text", "start"}``, ``start``
a character offset with ``context[start:start+len(text)] == text``). A context longer than ``max_length``
is read in overlapping windows (``stride`` tokens shared by consecutive windows), one row each; a window's
target is the first token and the last token of the first gold answer lying wholly inside it, or the first
token (``(0, 0)``, as transformers' QA examples do) when none does. A start and an end logit per token;
cross-entropy over both. An example's answer is the best ``start + end`` span of context tokens (at most
:data:`MAX_ANSWER_TOKENS`) over all its windows. SQuAD-style exact match and token F1, each the best over
the example's gold answers.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from typing import Any, Sequence

import numpy as np
import torch
from transformers import AutoModelForQuestionAnswering

from dfwe.data.encode import Batch, EncodedSet, Preprocessing, pad_rows
from dfwe.data.records import Example, Task
from dfwe.data.shapes.base import TaskShape
from dfwe.errors import BadInput
from dfwe.modeling import DfweForQuestionAnswering, DfwePreTrainedModel
from dfwe.stats import MetricStats

MAX_ANSWER_TOKENS = 30
PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lowercase, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in PUNCTUATION)
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str) -> float:
    """Harmonic mean of token precision and recall after normalisation (1 when both are empty)."""
    pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not pred or not ref:
        return float(pred == ref)
    same = sum((Counter(pred) & Counter(ref)).values())
    return 0.0 if same == 0 else 2 * same / (len(pred) + len(ref))


def fit_questions(tokenizer: Any, questions: Sequence[str], prep: Preprocessing) -> tuple[list[str], int]:
    """Questions cut at their end to leave every window more context room than ``stride``, and how many were cut.

    The fast tokenizer cannot window a context whose room is not larger than the stride (it panics), so a
    question longer than ``max_length - specials - stride - 1`` tokens keeps only its first tokens.
    """
    room = prep.max_length - tokenizer.num_special_tokens_to_add(pair=True) - prep.stride - 1
    if room < 1:
        raise BadInput(f"data.stride ({prep.stride}) leaves no room for a question in data.max_length "
                       f"({prep.max_length}); use a stride below {prep.stride + room}")
    out, cut = list(questions), set()
    for _ in range(3):  # a prefix cut at a token's end re-tokenises to at most as many tokens; re-check anyway
        encoded = tokenizer(out, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        over = [i for i, offsets in enumerate(encoded) if len(offsets) > room]
        for i in over:
            out[i] = out[i][: encoded[i][room - 1][1]]
        cut.update(over)
        if not over:
            break
    return out, len(cut)


def answer_tokens(answers: Sequence[tuple[str, int]], offsets: Sequence[Sequence[int]]) -> tuple[int, int]:
    """First and last token of the first answer lying wholly inside a window, else ``(0, 0)``."""
    context = [i for i, (begin, _) in enumerate(offsets) if begin >= 0]
    if not context:
        return 0, 0
    for text, start in answers:
        end = start + len(text)
        if offsets[context[0]][0] <= start and end <= offsets[context[-1]][1]:
            inside = [i for i in context if offsets[i][1] > start and offsets[i][0] < end]
            if inside:
                return inside[0], inside[-1]
    return 0, 0


def best_spans(start: np.ndarray, end: np.ndarray, context: np.ndarray,
               max_tokens: int = MAX_ANSWER_TOKENS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row of ``[rows, L]`` logits: the best ``start + end`` over context spans of at most ``max_tokens``
    tokens, with its first and last token (``-inf``, 0, 0 where a row has no context token)."""
    rows, width = start.shape
    best, first, last = np.full(rows, -np.inf), np.zeros(rows, dtype=np.int64), np.zeros(rows, dtype=np.int64)
    every = np.arange(rows)
    for extra in range(min(max_tokens, width)):  # spans of extra + 1 tokens; context tokens are contiguous
        scores = np.where(context[:, : width - extra] & context[:, extra:],
                          start[:, : width - extra] + end[:, extra:], -np.inf)
        at = scores.argmax(axis=1)
        top = scores[every, at]
        better = top > best  # strict: the shortest span and earliest start win ties
        best[better], first[better], last[better] = top[better], at[better], at[better] + extra
    return best, first, last


class Span(TaskShape):
    name = "span"
    auto_class = AutoModelForQuestionAnswering
    model_class = DfweForQuestionAnswering
    metrics = ("exact_match", "token_f1")
    pooled = False

    def parse(self, record: dict[str, Any], where: str, context_turns: int) -> Example:
        question, context, answers = record.get("question"), record.get("context"), record.get("answers")
        if not isinstance(question, str) or not isinstance(context, str):
            raise BadInput(f"{where}: fields 'question' and 'context' must be strings")
        if not isinstance(answers, list) or not answers:
            raise BadInput(f"{where}: field 'answers' must be a non-empty list of {{\"text\", \"start\"}}, "
                           f"got {answers!r}")
        parsed = []
        for answer in answers:
            text = answer.get("text") if isinstance(answer, dict) else None
            start = answer.get("start") if isinstance(answer, dict) else None
            if (not isinstance(text, str) or not text.strip() or not isinstance(start, int) or isinstance(start, bool)
                    or start < 0 or context[start:start + len(text)] != text):
                raise BadInput(f"{where}: answer {answer!r} is not a span of the context (needs a non-empty "
                               "'text' equal to context[start:start+len(text)], 0 <= start); fix its 'start' or 'text'")
            parsed.append((text, start))
        return Example(id=str(record["id"]), text=question, context=context, answers=tuple(parsed),
                       dialogue_id=str(record.get("dialogue_id") or ""))

    def num_outputs(self, task: Task) -> int:
        return 2

    def encode(self, examples: Sequence[Example], tokenizer: Any, task: Task, prep: Preprocessing) -> EncodedSet:
        if not getattr(tokenizer, "is_fast", False):
            raise BadInput(f"task {task.name}: span tasks need a fast tokenizer (character offsets of tokens)")
        owners, ids, types, offsets, labels, truncated = [], [], [], [], [], 0
        if examples:  # the tokenizer refuses an empty batch
            questions, truncated = fit_questions(tokenizer, [e.text for e in examples], prep)
            side = tokenizer.truncation_side
            try:
                tokenizer.truncation_side = "right"  # windows run from the context's beginning
                out = tokenizer(questions, [e.context for e in examples], truncation="only_second",
                                max_length=prep.max_length, stride=prep.stride, return_overflowing_tokens=True,
                                return_offsets_mapping=True, return_token_type_ids=True)
            finally:
                tokenizer.truncation_side = side
            owners, ids, types = list(out["overflow_to_sample_mapping"]), out["input_ids"], out["token_type_ids"]
            for row, owner in enumerate(owners):
                # offsets of context tokens only: the question's own offsets point into the question
                row_offsets = [list(span) if sequence == 1 else [-1, -1]
                               for span, sequence in zip(out["offset_mapping"][row], out.sequence_ids(row))]
                offsets.append(row_offsets)
                labels.append(answer_tokens(examples[owner].answers, row_offsets))
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        input_ids = pad_rows(ids, pad)
        offset_tensor = torch.full((*input_ids.shape, 2), -1, dtype=torch.long)
        for row, row_offsets in enumerate(offsets):
            offset_tensor[row, : len(row_offsets)] = torch.as_tensor(row_offsets, dtype=torch.long).view(-1, 2)
        return EncodedSet(ids=tuple(examples[i].id for i in owners), input_ids=input_ids,
                          token_type_ids=pad_rows(types, 0),
                          lengths=torch.tensor([len(r) for r in ids], dtype=torch.long),
                          labels=torch.tensor(labels, dtype=torch.long).view(-1, 2), pad_id=pad,
                          example_of=torch.tensor(owners, dtype=torch.long), offsets=offset_tensor, truncated=truncated)

    def features(self, model: DfwePreTrainedModel, batch: Batch) -> torch.Tensor:
        return model.features(**batch.model_inputs(), pooled=False, **batch.trunk_inputs())

    def head_logits(self, model: DfwePreTrainedModel, features: torch.Tensor, batch: Batch) -> torch.Tensor:
        logits = model.head(model.dropout(features)).float()  # [rows, L, 2]
        logits = logits.masked_fill(~batch.attention_mask.bool().unsqueeze(-1), torch.finfo(logits.dtype).min)
        return logits.transpose(1, 2)  # [rows, 2, L]: tokens last, where predict_logits pads

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        # rows' start and end distributions as 2 * rows cases: the mean of the start and end cross-entropies
        return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))

    def decode(self, logits: np.ndarray, data: EncodedSet, examples: Sequence[Example], task: Task) -> list[Any]:
        assert data.offsets is not None and data.example_of is not None
        width = min(logits.shape[-1], data.offsets.shape[1])
        offsets = data.offsets[:, :width].numpy()
        best, first, last = best_spans(logits[:, 0, :width], logits[:, 1, :width], offsets[..., 0] >= 0)
        scores, answers = [-np.inf] * len(examples), [""] * len(examples)
        for row, owner in enumerate(data.example_of.tolist()):
            if best[row] > scores[owner]:
                context = examples[owner].context
                scores[owner] = best[row]
                answers[owner] = context[offsets[row, first[row], 0]: offsets[row, last[row], 1]]
        return answers

    def metric_stats(self, predictions: Sequence[Any], examples: Sequence[Example], task: Task) -> MetricStats:
        stats = np.array([[max(exact_match(p, text) for text, _ in e.answers),
                           max(token_f1(p, text) for text, _ in e.answers), 1.0]
                          for p, e in zip(predictions, examples)], dtype=np.float64).reshape(-1, 3)

        def finalize(totals: np.ndarray) -> dict[str, np.ndarray]:
            count = np.maximum(totals[..., 2], 1.0)  # whole counts: only an empty total is lifted (to 0 / 1)
            return {"exact_match": totals[..., 0] / count, "token_f1": totals[..., 1] / count}

        return MetricStats(stats, finalize)
