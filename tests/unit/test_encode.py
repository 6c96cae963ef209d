"""Encoding: an utterance longer than max_length encodes (its end is cut, its context dropped) and is counted;
the context is cut on the side its form keeps; digests follow content, not ids."""

from __future__ import annotations

from dataclasses import replace

import pytest
from conftest import WORDS

from dfwe.checkpoints import load_tokenizer
from dfwe.data.encode import Preprocessing
from dfwe.data.records import Example, Task
from dfwe.data.shapes import get_shape

SHAPE = get_shape("classification")
TASK = Task(name="t", path=None, shape="classification", labels=("neg", "pos"), metric="weighted_f1", splits={})


def _words(count: int, offset: int = 0) -> str:
    return " ".join(WORDS[(offset + i) % len(WORDS)] for i in range(count))


@pytest.mark.parametrize("context", ["", "rachel: hi " + _words(10)])
def test_an_utterance_twice_max_length_encodes_keeps_its_start_and_is_counted(tiny_base, context):
    tokenizer = load_tokenizer(tiny_base)
    max_length = 16
    long = Example(id="long", text=_words(2 * max_length), context=context, label="neg")
    short = Example(id="short", text="good bad", context=context, label="pos")
    encoded = SHAPE.encode([long, short], tokenizer, TASK, Preprocessing(max_length=max_length))
    assert encoded.truncated == 1  # the long utterance only
    ids = encoded.input_ids[0, : int(encoded.lengths[0])].tolist()
    assert len(ids) == max_length
    tokens = tokenizer.convert_ids_to_tokens(ids)
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]" and tokens.count("[SEP]") == 1  # no context segment
    assert tokens[1 : max_length - 1] == _words(max_length - 2).split()  # the utterance's beginning survives
    short_tokens = tokenizer.convert_ids_to_tokens(encoded.input_ids[1, : int(encoded.lengths[1])].tolist())
    assert short_tokens[1:3] == ["good", "bad"]
    assert ("hi" in short_tokens) == bool(context)  # a short utterance keeps its context


def test_dialogue_context_keeps_its_most_recent_end_and_a_text_pair_its_beginning(tiny_base):
    tokenizer = load_tokenizer(tiny_base)
    context = _words(30)
    dialogue = Example(id="d", text="ross: hi", context=context, context_keep="end", label="neg")
    pair = Example(id="p", text="ross: hi", context=context, context_keep="start", label="neg")
    encoded = SHAPE.encode([dialogue, pair], tokenizer, TASK, Preprocessing(max_length=12))
    assert encoded.truncated == 0  # only contexts were cut
    for row, expected in ((0, context.split()[-6:]), (1, context.split()[:6])):
        tokens = tokenizer.convert_ids_to_tokens(encoded.input_ids[row, : int(encoded.lengths[row])].tolist())
        assert tokens == ["[CLS]", "ross", ":", "hi", "[SEP]", *expected, "[SEP]"]


def test_digest_follows_content_not_ids(tiny_base):
    tokenizer = load_tokenizer(tiny_base)
    examples = [Example(id=str(i), text=_words(3, i), label=("neg", "pos")[i % 2]) for i in range(4)]
    prep = Preprocessing(max_length=16)
    digest = SHAPE.encode(examples, tokenizer, TASK, prep).digest()
    renamed = [replace(e, id=f"other-{e.id}") for e in examples]
    assert SHAPE.encode(renamed, tokenizer, TASK, prep).digest() == digest
    relabelled = [replace(examples[0], label="pos"), *examples[1:]]
    assert SHAPE.encode(relabelled, tokenizer, TASK, prep).digest() != digest
    assert SHAPE.encode(examples, tokenizer, TASK, Preprocessing(max_length=4)).digest() != digest
