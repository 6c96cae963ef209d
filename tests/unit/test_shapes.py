"""The multilabel, span and multiple-choice shapes: parsing, encoding, decoding, metrics, and a tiny model of
each that trains (loss backpropagates, the head fits) and predicts padded outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_task
from sklearn.metrics import f1_score

from dfwe.data.encode import Preprocessing, eval_batches
from dfwe.data.prepare import DataConfig, Suite, prepare_data
from dfwe.data.records import Example, Task
from dfwe.data.sampling import answerless_windows
from dfwe.data.shapes import SHAPES
from dfwe.data.shapes.multilabel import label_matrix
from dfwe.data.shapes.multiple_choice import fill, mention_spans
from dfwe.data.shapes.span import answer_tokens, best_spans, exact_match, token_f1
from dfwe.data.tasks import load_task
from dfwe.errors import BadInput
from dfwe.forward import fit_head, predict_logits
from dfwe.report.submission import submission_value

MULTILABEL, SPAN, CHOICE = SHAPES["multilabel"], SHAPES["span"], SHAPES["multiple_choice"]
WORDS = ("where is ross monica rachel joey said hi to at the central perk home cafe . ? ! who drinks coffee "
         "relations of with friends likes :").split()
RELATIONS = ("per:friends", "per:roommate", "unanswerable")

# A context of 45 one-word tokens, "the central perk" at tokens 20-22. With a 4-token question, max_length 24
# and stride 8 a window holds 17 context tokens and the next one starts 9 tokens on: windows at tokens
# 0, 9, 18, 27, 36, so only windows 1 and 2 hold the answer, at positions 6 + (20 - 9) = 17 and 6 + 2 = 8.
CONTEXT_TOKENS = ((["monica", "said", "hi", "to", "rachel", "."] * 4)[:20] + ["the", "central", "perk"]
                  + (["ross", "is", "at", "home", "."] * 5)[:22])
LONG_CONTEXT = " ".join(CONTEXT_TOKENS)
ANSWER = "the central perk"
SPAN_PREP = Preprocessing(max_length=24, stride=8)


def task(shape: str, labels: tuple[str, ...] = (), ignore: tuple[str, ...] = ()) -> Task:
    return Task(name="t", path=Path("t"), shape=shape, labels=labels, metric=SHAPES[shape].metrics[0], splits={},
                ignore_labels=ignore)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    from dfwe.train.base import build_tiny_base

    return build_tiny_base(tmp_path_factory.mktemp("base") / "tiny", WORDS, hidden_size=16, num_layers=2,
                           num_heads=2, intermediate_size=32, seed=0)


@pytest.fixture(scope="module")
def tokenizer(base):
    from dfwe.checkpoints import load_tokenizer

    loaded = load_tokenizer(base)
    assert loaded.is_fast
    return loaded


def span_examples() -> list[Example]:
    long = SPAN.parse({"id": "long", "question": "where is ross ?", "context": LONG_CONTEXT,
                       "answers": [{"text": ANSWER, "start": LONG_CONTEXT.index(ANSWER)}]}, "f:1", 3)
    short_context = "monica is at the central perk ."
    short = SPAN.parse({"id": "short", "dialogue_id": "d1", "question": "where is monica ?", "context": short_context,
                        "answers": [{"text": "central perk", "start": 17}, {"text": ANSWER, "start": 13}]}, "f:2", 3)
    return [long, short]


def choice_examples() -> list[Example]:
    return [CHOICE.parse({"id": "a", "question": "@placeholder drinks coffee at the central perk",
                          "context": "monica : hi ross", "choices": ["monica", "ross"], "label": "ross"}, "f:1", 3),
            CHOICE.parse({"id": "b", "question": "who is at home ?", "context": "joey : hi rachel",
                          "choices": ["monica", "ross", "rachel", "joey"], "label": "joey"}, "f:2", 3)]


def multilabel_examples() -> list[Example]:
    rows = [(["per:friends"], "monica"), (["per:friends", "per:roommate"], "rachel"), (["unanswerable"], "joey"),
            (["per:roommate"], "ross")]
    return [MULTILABEL.parse({"id": f"m{i}", "text": f"relations of ross with {name}",
                              "text_pair": f"ross : hi {name} . {name} likes coffee", "labels": labels}, f"f:{i}", 3)
            for i, (labels, name) in enumerate(rows)]


# ---------------------------------------------------------------- multilabel

def test_multilabel_decode_thresholds_at_one_half_and_falls_back_to_the_most_probable_label():
    logits = np.array([[2.0, -1.0, 0.5], [-3.0, -0.5, -2.0], [0.0, -1.0, -2.0]])
    got = MULTILABEL.decode(logits, None, [], task("multilabel", ("a", "b", "c")))
    # row 3: sigmoid(0) is exactly 0.5, not above it, so the fallback picks it as the most probable label
    assert got == [("a", "c"), ("b",), ("a",)]


def test_multilabel_micro_f1_leaves_out_ignored_labels_as_sklearn_does():
    t = task("multilabel", RELATIONS, ignore=("unanswerable",))
    gold = [("per:friends",), ("per:friends", "per:roommate"), ("unanswerable",), ("per:roommate",)]
    pred = [("per:friends", "per:roommate"), ("per:friends",), ("per:friends",), ("unanswerable",)]
    examples = [Example(id=str(i), text="x", labels=g) for i, g in enumerate(gold)]
    # kept labels only: tp = 2, fp = 2 (roommate in 0, friends in 2), fn = 2 (roommate in 1 and 3) -> 4 / 8
    value = MULTILABEL.metric_stats(pred, examples, t).value()["micro_f1"]
    assert value == 0.5
    reference = f1_score(label_matrix(gold, RELATIONS), label_matrix(pred, RELATIONS), average="micro", labels=[0, 1])
    assert value == pytest.approx(reference, abs=1e-12)

    rng = np.random.default_rng(0)  # a larger random case, with examples whose kept labels are all empty
    gold_m, pred_m = rng.random((40, 3)) < 0.4, rng.random((40, 3)) < 0.4
    to_sets = lambda m: [tuple(RELATIONS[j] for j in np.flatnonzero(row)) for row in m]  # noqa: E731
    value = MULTILABEL.metric_stats(to_sets(pred_m), [Example(id="e", text="x", labels=g) for g in to_sets(gold_m)],
                                    t).value()["micro_f1"]
    assert value == pytest.approx(f1_score(gold_m, pred_m, average="micro", labels=[0, 1]), abs=1e-12)


def test_multilabel_records_are_checked_and_submitted_in_label_order():
    with pytest.raises(BadInput, match=r"^f\.jsonl:7: field 'labels' must be a non-empty list"):
        MULTILABEL.parse({"id": "x", "text": "a", "labels": []}, "f.jsonl:7", 3)
    with pytest.raises(BadInput, match=r"^f\.jsonl:8: field 'labels'"):
        MULTILABEL.parse({"id": "x", "text": "a"}, "f.jsonl:8", 3)
    example = MULTILABEL.parse({"id": "x", "text": "a", "labels": ["per:boss"]}, "f.jsonl:9", 3)
    with pytest.raises(BadInput, match=r"^f\.jsonl:9: label 'per:boss' is not one of the task's labels"):
        MULTILABEL.check(example, RELATIONS, "f.jsonl:9")
    assert MULTILABEL.label_space(multilabel_examples()) == RELATIONS
    assert MULTILABEL.submission(("per:roommate",), task("multilabel", RELATIONS)) == "[0, 1, 0]"


def test_relation_predictions_are_submitted_as_tlidbs_37_slot_float_vectors():
    # DialogRE relations: TLiDB's order, where per:friends is slot 8, per:roommate 11 and unanswerable 36 (last)
    vector = submission_value(("per:roommate", "per:friends"), task("multilabel", RELATIONS))
    slots = vector.strip("[]").split(" ")
    assert len(slots) == 37 and [i for i, v in enumerate(slots) if v == "1.0"] == [8, 11]
    assert set(slots) == {"0.0", "1.0"} and "," not in vector
    assert submission_value(("unanswerable",), task("multilabel", RELATIONS)).endswith(" 0.0 1.0]")
    # labels that are not DialogRE's keep the shape's own 0/1 vector in the task's label order
    assert submission_value(("b",), task("multilabel", ("a", "b"))) == "[0, 1]"
    assert submission_value("ross", task("multiple_choice")) == "ross"


# ---------------------------------------------------------------- span

def test_span_windows_point_at_the_answer_where_it_fits_and_at_the_first_token_elsewhere(tokenizer):
    examples = span_examples()
    data = SPAN.encode(examples, tokenizer, task("span"), SPAN_PREP)
    assert data.example_of.tolist() == [0, 0, 0, 0, 0, 1]
    assert data.ids == ("long",) * 5 + ("short",)
    assert data.lengths.tolist() == [24, 24, 24, 24, 16, 14]
    assert data.labels.tolist() == [[0, 0], [17, 19], [8, 10], [0, 0], [0, 0], [10, 11]]
    assert data.input_ids.shape == (6, 24) and data.offsets.shape == (6, 24, 2)
    for row in (1, 2):  # the target tokens' offsets give back exactly the answer text
        start, end = data.labels[row].tolist()
        assert LONG_CONTEXT[data.offsets[row, start, 0]:data.offsets[row, end, 1]] == ANSWER
    # the short example's answers both fit its one window: the first of the list, "central perk", is the target
    short = examples[1]
    assert short.context[data.offsets[5, 10, 0]:data.offsets[5, 11, 1]] == short.answers[0][0] == "central perk"
    # question tokens, specials and padding carry no offsets
    assert (data.offsets[:, :6] == -1).all() and (data.offsets[4, 15:] == -1).all()
    nine = len(" ".join(CONTEXT_TOKENS[:9])) + 1  # window 1 starts at context token 9, the second "to"
    assert data.offsets[1, 6].tolist() == [nine, nine + 2] and LONG_CONTEXT[nine:nine + 2] == "to"
    assert data.truncated == 0


def test_span_train_sets_keep_every_answer_window_and_a_seeded_fraction_of_the_rest(tokenizer, tmp_path):
    data = SPAN.encode(span_examples(), tokenizer, task("span"), SPAN_PREP)  # answers in rows 1, 2 and 5
    example_of, has_answer = data.example_of.numpy(), data.labels[:, 0].numpy() > 0
    assert answerless_windows(example_of, has_answer, 0.1, np.random.default_rng(0)).tolist() == [1, 2, 5]
    two = answerless_windows(example_of, has_answer, 0.67, np.random.default_rng(0)).tolist()  # 2 of rows 0, 3, 4
    assert len(two) == 5 and {1, 2, 5} <= set(two) and two == sorted(two)
    assert two == answerless_windows(example_of, has_answer, 0.67, np.random.default_rng(0)).tolist()
    assert answerless_windows(example_of, has_answer, 1.0, np.random.default_rng(0)).tolist() == [0, 1, 2, 3, 4, 5]
    # an example none of whose windows holds an answer keeps its first window
    lost = has_answer.copy()
    lost[[1, 2]] = False
    assert answerless_windows(example_of, lost, 0.1, np.random.default_rng(0)).tolist() == [0, 5]

    # the data stage samples the train sets of the target and of span sources; dev and test keep every window
    records = [{"id": e.id, "dialogue_id": f"d{i}", "question": e.text, "context": e.context,
                "answers": [{"text": text, "start": start} for text, start in e.answers]}
               for i, e in enumerate(span_examples())]
    spec = json.dumps({"type": "span", "metric": "token_f1"})
    for name in ("qa", "qa2"):
        write_task(tmp_path / name, {split: [{**r, "id": f"{split}-{r['id']}"} for r in records]
                                     for split in ("train", "dev", "test")})
        (tmp_path / name / "task.json").write_text(spec)
    config = DataConfig(data_dir=tmp_path, target="qa", sources=["qa2"], sampling="dialogues", fraction=1.0,
                        max_length=24, stride=8, answerless_windows=0.1)
    prepared = prepare_data(config, Suite(tmp_path), tokenizer, seed=0)
    for train in (prepared.train, prepared.sources["qa2"].train):
        assert train.encoded.labels.tolist() == [[17, 19], [8, 10], [10, 11]]
        assert train.encoded.example_of.tolist() == [0, 0, 1] and len(train.examples) == 2
    assert len(prepared.dev.encoded) == len(prepared.test.encoded) == len(prepared.sources["qa2"].dev.encoded) == 6
    # the default keeps the set exactly as encoded: the same digest, so cached artefacts stay valid
    whole = prepare_data(config.model_copy(update={"answerless_windows": 1.0}), Suite(tmp_path), tokenizer, seed=0)
    assert whole.train.encoded.digest() == prepared.dev.encoded.digest() != prepared.train.encoded.digest()


def test_span_question_too_long_for_a_window_is_cut_and_a_stride_without_room_is_refused(tokenizer):
    record = {"id": "q", "question": "where is ross ? " * 5, "context": "monica is at the central perk .",
              "answers": [{"text": ANSWER, "start": 13}]}
    # 20 question tokens; a window needs more than stride (8) context tokens: 24 - 3 - 8 - 1 = 12 are kept
    data = SPAN.encode([SPAN.parse(record, "f:1", 3)], tokenizer, task("span"), SPAN_PREP)
    assert data.truncated == 1 and data.lengths.tolist() == [3 + 12 + 7]
    assert data.labels.tolist() == [[14 + 3, 14 + 5]]  # [CLS], 12 question tokens, [SEP], then the context
    with pytest.raises(BadInput, match=r"^data\.stride \(20\) leaves no room .* use a stride below 20$"):
        SPAN.encode([SPAN.parse(record, "f:1", 3)], tokenizer, task("span"), Preprocessing(max_length=24, stride=20))


def test_span_answer_tokens_take_the_first_answer_wholly_inside_the_window():
    offsets = [[-1, -1], [0, 3], [4, 7], [8, 11], [-1, -1]]  # [CLS] aaa bbb ccc [SEP] of "aaa bbb ccc ddd"
    assert answer_tokens([("ccc ddd", 8), ("bbb", 4)], offsets) == (2, 2)
    assert answer_tokens([("bbb ccc", 4)], offsets) == (2, 3)
    assert answer_tokens([("ddd", 12)], offsets) == (0, 0)


def test_best_spans_keep_to_context_tokens_start_before_end_and_the_length_limit():
    start = np.array([[100.0, 5.0, 0.0, 0.0]])
    end = np.array([[100.0, 0.0, 0.0, 6.0]])
    context = np.array([[False, True, True, True]])
    assert [a.tolist() for a in best_spans(start, end, context, max_tokens=3)] == [[11.0], [1], [3]]
    # two tokens at most: (3, 3) and (2, 3) both score 6; the shorter is kept
    assert [a.tolist() for a in best_spans(start, end, context, max_tokens=2)] == [[6.0], [3], [3]]
    # end before start never counts: the best start is after the best end
    assert [a.tolist() for a in best_spans(end, start, context)] == [[6.0], [3], [3]]


def test_span_decode_returns_the_exact_answer_over_all_windows(tokenizer):
    examples = span_examples()
    data = SPAN.encode(examples, tokenizer, task("span"), SPAN_PREP)
    logits = np.full((6, 2, 24), -50.0)
    for row, length in enumerate(data.lengths.tolist()):
        logits[row, :, length:] = -np.inf
    logits[:, :, 0] = 50.0  # [CLS] (the no-answer target) is never an answer
    logits[4, :, 1:3] = 40.0  # nor are question tokens
    logits[3, 1, 7], logits[3, 0, 9] = 30.0, 30.0  # an end before its start
    logits[0, 0, 22] = 4.0  # a start at window 0's last context token: spans never run into the next window
    logits[1, 0, 17], logits[1, 1, 19] = 3.0, 3.0  # "the central perk", favoured in the second window only
    logits[5, 0, 10], logits[5, 1, 11] = 2.0, 2.0  # "central perk" in the short example's only window
    assert SPAN.decode(logits, data, examples, task("span")) == [ANSWER, "central perk"]

    # favoured in the third window instead, whose own positions of the answer are 8-10
    logits[1, 0, 17] = logits[1, 1, 19] = -50.0
    logits[2, 0, 8], logits[2, 1, 10] = 1.0, 1.0
    assert SPAN.decode(logits, data, examples, task("span"))[0] == ANSWER
    logits[2, 0, 8] = -50.0
    logits[2, 0, 9] = 1.0  # and "central perk" there, tokens 9-10
    assert SPAN.decode(logits, data, examples, task("span"))[0] == "central perk"
    empty = np.full((6, 2, 24), -np.inf)
    assert SPAN.decode(empty, data, examples, task("span")) == ["", ""]


def test_span_exact_match_and_token_f1_are_squad_style():
    assert exact_match("the Central Perk", "central perk!") == 1.0
    assert token_f1("the Central Perk", "central perk!") == 1.0
    assert exact_match("Central Perk cafe", "the central perk") == 0.0
    assert token_f1("Central Perk cafe", "the central perk") == pytest.approx(0.8)  # p 2/3, r 1
    assert token_f1("a cafe", "central perk") == 0.0
    examples = [Example(id="1", text="q", answers=(("central perk!", 0),)),
                Example(id="2", text="q", answers=(("the central perk", 0), ("the coffee house", 0))),
                Example(id="3", text="q", answers=(("monica", 0),))]
    # example 2: 0.8 against its first answer, 2 * (1/3 * 1/2) / (1/3 + 1/2) = 0.4 against its second
    value = SPAN.metric_stats(["the Central Perk", "Central Perk coffee", ""], examples, task("span")).value()
    assert value == pytest.approx({"exact_match": 1 / 3, "token_f1": (1 + 0.8 + 0) / 3})


def test_span_answers_outside_their_context_are_bad_input_naming_file_and_line(tmp_path):
    good = {"id": "1", "question": "where ?", "context": "at home", "answers": [{"text": "home", "start": 3}]}
    bad = {"id": "2", "question": "where ?", "context": "at home", "answers": [{"text": "home", "start": 30}]}
    folder = write_task(tmp_path / "qa", {"train": [good, bad], "dev": [good], "test": [good]})
    (folder / "task.json").write_text(json.dumps({"type": "span"}))
    with pytest.raises(BadInput, match=r"train\.jsonl:2: answer .*'start': 30.* is not a span of the context") as error:
        load_task(folder)
    assert "\n" not in str(error.value)
    with pytest.raises(BadInput, match=r"^f:4: answer \{'text': 'house', 'start': 3\}"):
        SPAN.parse({**good, "answers": [{"text": "house", "start": 3}]}, "f:4", 3)
    with pytest.raises(BadInput, match=r"^f:5: field 'answers' must be a non-empty list"):
        SPAN.parse({**good, "answers": []}, "f:5", 3)


# ---------------------------------------------------------------- multiple choice

def test_multiple_choice_pads_choices_and_never_picks_a_padded_one(tokenizer):
    examples = choice_examples()
    data = CHOICE.encode(examples, tokenizer, task("multiple_choice"), Preprocessing(max_length=32))
    assert data.input_ids.shape[:2] == (2, 4) and data.token_type_ids.shape == data.input_ids.shape
    assert data.lengths[0, 2:].tolist() == [0, 0] and (data.lengths[1] > 0).all() and (data.lengths[0, :2] > 0).all()
    assert (data.input_ids[0, 2:] == tokenizer.pad_token_id).all()
    assert data.labels.tolist() == [1, 3]
    first = tokenizer.decode(data.input_ids[0, 1, : int(data.lengths[0, 1])])
    assert first == "[CLS] ross drinks coffee at the central perk [SEP] monica : hi ross [SEP]"
    third = tokenizer.decode(data.input_ids[1, 2, : int(data.lengths[1, 2])])
    assert third == "[CLS] who is at home? rachel [SEP] joey : hi rachel [SEP]"
    assert fill("who is at home ?", "joey") == "who is at home ? joey"
    assert data.truncated == 0  # at 8 tokens every (question, choice) is cut: each example counts once
    assert CHOICE.encode(examples, tokenizer, task("multiple_choice"), Preprocessing(max_length=8)).truncated == 2

    logits = np.array([[0.1, 2.0, 9.0, 9.0], [3.0, 1.0, 0.0, 2.5]])  # padded columns high on purpose
    predictions = CHOICE.decode(logits, data, examples, task("multiple_choice"))
    assert predictions == ["ross", "monica"]
    assert CHOICE.metric_stats(predictions, examples, task("multiple_choice")).value() == {"accuracy": 0.5}
    assert CHOICE.submission("ross", task("multiple_choice")) == "ross"


def test_mention_spans_list_every_choice_and_find_it_and_its_first_name_as_whole_words():
    first, spans = mention_spans("@placeholder drinks coffee", ["monica geller", "ross", "rachel"],
                                 "ross : hi monica . monica geller said hi to rossy")
    assert first == "@placeholder drinks coffee | monica geller | ross | rachel"
    assert first[29:42] == "monica geller" and first[45:49] == "ross" and first[52:58] == "rachel"
    # "monica" alone is monica geller's first name; "rossy" is not "ross"; rachel is only in the list
    assert spans == [[(0, 29, 42), (1, 10, 16), (1, 19, 25), (1, 19, 32)], [(0, 45, 49), (1, 0, 4)], [(0, 52, 58)]]
    # a first name shared by two choices, or that is itself a choice, names neither
    _, shared = mention_spans("q", ["ross geller", "ross", "ross g"], "ross geller : hi ross")
    assert shared[0][1:] == [(1, 0, 11)] and shared[1][1:] == [(1, 0, 4), (1, 17, 21)] and shared[2][1:] == []


def test_multiple_choice_mentions_read_each_example_once_and_mark_each_choices_tokens(tokenizer):
    examples = [CHOICE.parse({"id": "a", "question": "@placeholder drinks coffee",
                              "context": "ross : hi monica . joey said hi to rachel",
                              "choices": ["monica", "ross", "rachel joey"], "label": "ross"}, "f:1", 3),
                CHOICE.parse({"id": "b", "question": "who is at home ?", "context": "joey : hi",
                              "choices": ["joey", "ross"], "label": "joey"}, "f:2", 3)]
    prep = Preprocessing(max_length=32, choices="mentions")
    data = CHOICE.encode(examples, tokenizer, task("multiple_choice"), prep)
    assert data.input_ids.ndim == 2 and data.choice_tokens.shape == (2, 3, data.input_ids.shape[1])
    assert data.labels.tolist() == [1, 0] and data.truncated == 0
    tokens = tokenizer.convert_ids_to_tokens(data.input_ids[0, : int(data.lengths[0])].tolist())
    assert tokens == ["[CLS]", "[UNK]", "[UNK]", "drinks", "coffee", "[UNK]", "monica", "[UNK]", "ross", "[UNK]", "rachel",
                      "joey", "[SEP]", "ross", ":", "hi", "monica", ".", "joey", "said", "hi", "to", "rachel", "[SEP]"]
    marked = [data.choice_tokens[0, c].nonzero().flatten().tolist() for c in range(3)]
    # each choice in the list and in the context; "rachel joey" also where its first name stands alone, but not
    # at the context's "joey"
    assert marked == [[6, 16], [8, 13], [10, 11, 22]]
    assert data.choice_tokens[1, 2].sum() == 0 and data.choice_tokens[1, :2].any(dim=-1).all()  # a padded choice
    # at 8 tokens the question and the list do not fit: a choice with no mention left is read at the first token
    cut = CHOICE.encode(examples, tokenizer, task("multiple_choice"), Preprocessing(max_length=8, choices="mentions"))
    assert cut.truncated == 2 and cut.input_ids.shape[1] == 8
    assert cut.choice_tokens[0, 2].nonzero().flatten().tolist() == [0]
    assert cut.choice_tokens[:, :2].any(dim=-1).all()
    # pairs and mentions encode the same examples differently, so their cached artefacts never mix
    assert data.digest() != CHOICE.encode(examples, tokenizer, task("multiple_choice"), Preprocessing(max_length=32)).digest()


def test_multiple_choice_label_outside_the_choices_is_bad_input():
    record = {"id": "x", "question": "@placeholder", "context": "c", "choices": ["monica", "ross"], "label": "joey"}
    with pytest.raises(BadInput, match=r"^f:3: label 'joey' is not one of the choices \['monica', 'ross'\]"):
        CHOICE.parse(record, "f:3", 3)
    with pytest.raises(BadInput, match=r"^f:3: field 'choices' must be a list of at least two"):
        CHOICE.parse({**record, "choices": ["joey"]}, "f:3", 3)


@pytest.mark.parametrize("name", ["multilabel", "span", "multiple_choice", "multiple_choice-mentions"])
def test_an_empty_example_list_encodes_to_no_rows(name, tokenizer):
    name, _, choices = name.partition("-")
    prep = Preprocessing(max_length=24, stride=8, choices=choices or "pairs")
    data = SHAPES[name].encode([], tokenizer, task(name, RELATIONS if name == "multilabel" else ()), prep)
    assert len(data) == 0 and data.num_examples == 0 and len(data.labels) == 0


# ---------------------------------------------------------------- tiny models of each shape

CASES = {
    "multilabel": (multilabel_examples, RELATIONS, Preprocessing(max_length=32)),
    "span": (span_examples, (), SPAN_PREP),
    "multiple_choice": (choice_examples, (), Preprocessing(max_length=32)),
    "multiple_choice-mentions": (choice_examples, (), Preprocessing(max_length=32, choices="mentions")),
}


@pytest.mark.parametrize("name", list(CASES))
def test_tiny_model_trains_predicts_padded_outputs_and_fits_its_head(name, base, tokenizer):
    from dfwe.checkpoints import new_model

    make, labels, prep = CASES[name]
    name = name.split("-")[0]
    shape, t = SHAPES[name], task(name, labels, ("unanswerable",) if labels else ())
    data = shape.encode(make(), tokenizer, t, prep)
    torch.manual_seed(0)
    model = new_model(base, name, labels, ("mean", False))
    assert isinstance(model, shape.model_class)
    model.eval()

    batch = next(eval_batches(data, 8))
    logits = shape.logits(model, batch)
    with torch.no_grad():  # the shape computes what the model class's own forward does
        out = model(**batch.model_inputs(), **({} if batch.choice_tokens is None else
                                               {"choice_tokens": batch.choice_tokens}))
    reference = torch.stack([out.start_logits, out.end_logits], 1) if name == "span" else out.logits
    np.testing.assert_allclose(logits.detach().numpy(), reference.float().numpy(), rtol=1e-5, atol=1e-5)

    model.train()
    loss = shape.loss(shape.logits(model, batch), batch.labels)
    assert torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.head.weight.grad.abs().sum() > 0 and model.body.embeddings.word_embeddings.weight.grad.abs().sum() > 0
    model.zero_grad()

    predicted = predict_logits(model, shape, data, batch_size=2)
    if name == "multilabel":
        assert predicted.shape == (4, 3) and np.isfinite(predicted).all()
    elif name == "span":  # padded tokens are -inf, every real token finite
        assert predicted.shape == (6, 2, 24)
        real = np.arange(24) < data.lengths.numpy()[:, None]
        assert np.isfinite(predicted[np.broadcast_to(real[:, None], predicted.shape)]).all()
        assert np.isneginf(predicted[np.broadcast_to(~real[:, None], predicted.shape)]).all()
    else:  # the 2-choice example's padded choices are -inf
        assert predicted.shape == (2, 4) and np.isneginf(predicted[0, 2:]).all() and np.isfinite(predicted[1]).all()
    assert all(isinstance(p, str if name != "multilabel" else tuple) for p in
               shape.decode(predicted, data, make(), t))

    before = shape.nll(predicted, data)
    body = {n: p.detach().clone() for n, p in model.body.named_parameters()}
    fit_head(model, shape, data, c=1e4, batch_size=2)  # a weak penalty: a handful of examples to fit
    after = shape.nll(predict_logits(model, shape, data), data)
    assert np.isfinite(before) and after < before / 2
    assert all(torch.equal(p, body[n]) for n, p in model.body.named_parameters())


def test_multilabel_probe_is_one_logistic_regression_per_label_as_sklearn_fits_them(base, tokenizer):
    from sklearn.linear_model import LogisticRegression

    from dfwe.checkpoints import new_model
    from dfwe.forward import body_features

    t = task("multilabel", RELATIONS, ("unanswerable",))
    data = MULTILABEL.encode(multilabel_examples(), tokenizer, t, Preprocessing(max_length=32))
    torch.manual_seed(0)
    model = new_model(base, "multilabel", RELATIONS, ("mean", False))
    fit_head(model, MULTILABEL, data, c=0.5, batch_size=2)

    features = body_features(model, MULTILABEL, data, batch_size=2).numpy()
    labels = data.labels.numpy()
    assert labels.sum(axis=0).tolist() == [2, 2, 1]  # every label has examples with it and without it
    for j in range(len(RELATIONS)):  # the penalty counts once per label, not once per label averaged over labels
        reference = LogisticRegression(C=0.5, max_iter=10000, tol=1e-10).fit(features, labels[:, j])
        np.testing.assert_allclose(model.head.weight.detach().numpy()[j], reference.coef_[0], atol=2e-3)
        np.testing.assert_allclose(model.head.bias.detach().numpy()[j], reference.intercept_[0], atol=2e-3)


def test_first_segment_pooling_is_the_mean_over_the_first_segments_tokens():
    """The first segment's real tokens alone (padding has token type 0 too); with no segments marked, the mean."""
    from dfwe.modeling import pool

    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [10.0, 20.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 1, 0]])
    types = torch.tensor([[0, 0, 1, 0]])
    assert torch.allclose(pool(hidden, mask, "first_segment", token_type_ids=types), torch.tensor([[2.0, 3.0]]))
    unmarked = pool(hidden, mask, "first_segment", token_type_ids=torch.zeros_like(types))
    assert torch.allclose(unmarked, torch.tensor([[14 / 3, 26 / 3]]))
    assert torch.allclose(unmarked, pool(hidden, mask, "mean"))
