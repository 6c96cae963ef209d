"""Plain transformers checkpoints of one base, from anywhere, merge, search and evaluate again (issue 18, class 5).

Tiny BERT ``*ForSequenceClassification``, ``*ForQuestionAnswering`` and ``*ForMultipleChoice`` checkpoints are
built in code. A merge is the hand-computed weighted sum of their tensors and opens as their own class; a
search of them is journalled and resumes after SIGKILL to the same weights; the merged model a search writes
is scored again by ``dfwe evaluate`` to the search's own dev score; checkpoints of different label sets are
refused.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers
from conftest import (
    PLAIN_CLASSES,
    friends_rows,
    journal_rows,
    plain_checkpoints,
    sigkill_mid_search,
    write_task,
    write_tiny_suite,
)
from safetensors.torch import load_file

AUTO = {"classification": transformers.AutoModelForSequenceClassification,
        "span": transformers.AutoModelForQuestionAnswering, "multiple_choice": transformers.AutoModelForMultipleChoice}
SUITE_TASK = {"span": "qa", "multiple_choice": "rc"}


def dfwe(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dfwe.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "DFWE_PROGRESS": "0"})


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("plain")
    write_tiny_suite(root / "suite")
    labels = ["neg", "neu", "pos"]
    write_task(root / "task", {"train": friends_rows("tr", labels, 6), "dev": friends_rows("dv", labels, 6),
                               "test": friends_rows("te", labels, 6)})
    return root


@pytest.mark.parametrize("shape", list(PLAIN_CLASSES))
def test_merge_is_the_weighted_sum_and_opens_as_the_same_class(shape, root, tmp_path):
    folders = plain_checkpoints(tmp_path / "in", shape, 3)
    done = dfwe("merge", *map(str, folders), "--weights", "0.2", "0.3", "0.5", "--out", str(tmp_path / "m"))
    assert done.returncode == 0, done.stderr
    tensors = [load_file(str(f / "model.safetensors")) for f in folders]
    merged = load_file(str(tmp_path / "m" / "model.safetensors"))
    assert set(merged) == set(tensors[0])
    for name, value in merged.items():
        if value.is_floating_point():
            expected = 0.2 * tensors[0][name] + 0.3 * tensors[1][name] + 0.5 * tensors[2][name]
            torch.testing.assert_close(value, expected, rtol=0, atol=1e-6)
        else:
            assert torch.equal(value, tensors[0][name])
    model = AUTO[shape].from_pretrained(str(tmp_path / "m"))
    assert type(model).__name__ == PLAIN_CLASSES[shape]
    assert (tmp_path / "m" / "tokenizer.json").is_file() and not (tmp_path / "m" / "dfwe.json").exists()
    assert json.loads((tmp_path / "m" / "config.json").read_text()) == json.loads((folders[0] / "config.json").read_text())


def test_checkpoints_whose_label_sets_differ_are_refused(dfwe_here, root, tmp_path):
    ours = plain_checkpoints(tmp_path / "a", "classification", 1)
    theirs = plain_checkpoints(tmp_path / "b", "classification", 1, labels=("neg", "pos", "neu"))
    dev = root / "task" / "dev.jsonl"
    for command in (["merge", *map(str, ours + theirs), "--weights", "0.5", "0.5"],
                    ["search", *map(str, ours + theirs), "--dev", str(dev), "--budget", "2"]):
        done = dfwe_here(*command, "--out", str(tmp_path / "out"))
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert "labels (neg, pos, neu)" in done.stderr and "(neg, neu, pos)" in done.stderr
        assert not (tmp_path / "out").exists()
    mixed = plain_checkpoints(tmp_path / "c", "span", 1)
    done = dfwe_here("merge", str(ours[0]), str(mixed[0]), "--weights", "0.5", "0.5", "--out", str(tmp_path / "out"))
    assert done.returncode == 2 and "BertForQuestionAnswering" in done.stderr and "one architecture" in done.stderr


@pytest.mark.parametrize("shape", ["span", "multiple_choice"])
def test_search_writes_a_model_of_the_same_class_that_evaluate_scores_alike(shape, root, tmp_path):
    folders = plain_checkpoints(tmp_path / "in", shape, 3)
    task = root / "suite" / SUITE_TASK[shape]
    prep = ["--max-length", "32", "--stride", "8"] if shape == "span" else ["--max-length", "32"]
    metric = "token_f1" if shape == "span" else "accuracy"
    done = dfwe("search", *map(str, folders), "--dev", str(task / "dev.jsonl"), "--objective", metric,
                "--budget", "5", *prep, "--out", str(tmp_path / "s"))
    assert done.returncode == 0, done.stderr
    results = json.loads((tmp_path / "s" / "results.json").read_text())
    assert results["task"]["shape"] == shape and results["search"]["evaluations"] == 5 + 1  # + the uniform soup
    merged = tmp_path / "s" / "merged"
    assert type(AUTO[shape].from_pretrained(str(merged))).__name__ == PLAIN_CLASSES[shape]
    info = json.loads((merged / "dfwe.json").read_text())
    assert info["preprocessing"]["max_length"] == 32 and info["weights"] == results["methods"]["dfwe"]["weights"]
    scored = dfwe("evaluate", str(merged), "--task", str(task), "--split", "dev")  # preprocessing from dfwe.json
    assert scored.returncode == 0, scored.stderr
    assert json.loads(scored.stdout)[metric] == pytest.approx(results["methods"]["dfwe"]["dev"][metric], abs=1e-9)


def test_evaluate_reads_a_plain_checkpoint_with_its_id2label_and_default_preprocessing(root, tmp_path):
    folder = plain_checkpoints(tmp_path / "in", "classification", 1)[0]
    done = dfwe("evaluate", str(folder), "--task", str(root / "task"), "--split", "test")
    assert done.returncode == 0, done.stderr
    scores = json.loads(done.stdout)
    assert scores["examples"] == 18 and 0.0 <= scores["weighted_f1"] <= 1.0
    model = transformers.AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
    rows = [json.loads(line) for line in (root / "task" / "test.jsonl").read_text().splitlines()]
    # the record form dfwe reads: "speaker: utterance" with the context turns as the second segment
    inputs = tokenizer([f"{r['speaker']}: {r['utterance']}" for r in rows], [" ".join(r["context"]) for r in rows],
                       padding=True, return_tensors="pt")
    with torch.no_grad():
        predicted = model(**inputs).logits.argmax(-1).tolist()
    accuracy = sum(model.config.id2label[p] == r["label"] for p, r in zip(predicted, rows)) / len(rows)
    assert scores["accuracy"] == pytest.approx(accuracy)


def test_search_with_refit_heads_resumes_after_sigkill_to_the_same_weights(root, tmp_path):
    folders = plain_checkpoints(tmp_path / "in", "classification", 3)
    common = [*map(str, folders), "--dev", str(root / "task" / "dev.jsonl"), "--train", str(root / "task" / "train.jsonl"),
              "--budget", "60", "--granularity", "layer", "--seed", "3"]
    reference = tmp_path / "reference"
    done = dfwe("search", *common, "--out", str(reference))
    assert done.returncode == 0, done.stderr
    results = json.loads((reference / "results.json").read_text())
    assert results["methods"]["dfwe"]["head"] == "refit"

    out = tmp_path / "killed"
    sigkill_mid_search(["search", *common, "--out", str(out)], out / "journal.sqlite", after_rows=10)
    before = journal_rows(out / "journal.sqlite")
    assert 10 <= len(before) < 60, "the search finished before it could be killed"
    resumed = dfwe("search", *common, "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    after = journal_rows(out / "journal.sqlite")
    assert len(after) == 60 + 1 and after[: len(before)] == before  # + the uniform soup
    ours = json.loads((out / "results.json").read_text())["search"]
    assert ours["best_weights"] == results["search"]["best_weights"]
    assert [r[1] for r in after] == [r[1] for r in journal_rows(reference / "journal.sqlite")]
