"""``dfwe demo`` end to end at a reduced size: every artefact exists and the merged model is the dfwe model."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoModelForSequenceClassification

REDUCED = ["--set", "data.synthetic.train_size=300", "--set", "data.synthetic.dev_size=60",
           "--set", "data.synthetic.test_size=120", "--set", "model.tiny.pretrain_steps=30",
           "--set", "experts.train.epochs=1", "--set", "target.train.epochs=3", "--set", "search.budget=6",
           "--set", "search.coarse_budget=3", "--set", "eval.bootstrap=50"]
METHODS = {"base-ft", "multitask-ft", "expert-ft:demo_sentiment", "expert-ft:demo_mood", "best-expert-ft",
           "uniform-soup", "greedy-soup", "logit-ensemble", "dfwe"}


def dfwe(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dfwe.cli", *args], capture_output=True, text=True,
                          env={**__import__("os").environ, "DFWE_PROGRESS": "0"})


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "run"
    done = dfwe("demo", "--out", str(out), *REDUCED)
    assert done.returncode == 0, done.stderr
    assert "| dfwe |" in done.stdout
    return out


def test_every_output_exists(demo_run):
    for name in ("results.json", "report.md", "config.yaml", "mergekit.yaml", "journal.sqlite",
                 "plots/test_scores.png", "plots/search_trace.png", "plots/weights.png",
                 "merged/config.json", "merged/model.safetensors", "merged/dfwe.json"):
        assert (demo_run / name).is_file(), name
    results = json.loads((demo_run / "results.json").read_text())
    assert set(results["methods"]) == METHODS
    assert results["search"]["evaluations"] == 6 + 2  # the budget, then the uniform and greedy soups
    assert results["search"]["kept"] in {"search", "uniform-soup", "greedy-soup"}
    # the search also scored both soups (the journal's last two rows), so it never ends worse than either on its
    # own objective (here pooled over the cross-fitted folds and penalised, so not a method's dev score)
    with sqlite3.connect(str(demo_run / "journal.sqlite")) as db:
        journalled = [value for (value,) in db.execute("SELECT objective FROM candidates ORDER BY idx")]
    assert len(journalled) == results["search"]["evaluations"] - results["search"]["coarse_evaluations"]
    assert results["search"]["best_objective"] == min(journalled) <= min(journalled[-2:])
    assert results["config"]["search"]["budget"] == 6
    # dfwe is compared pairwise with every method, the best single included (it is the ingredient chosen on dev)
    assert set(results["paired"]["test"]) == METHODS - {"dfwe"}
    selected = results["methods"]["best-expert-ft"]["selected"]
    assert results["paired"]["test"]["best-expert-ft"] == results["paired"]["test"][selected]
    for method in METHODS:
        for split in ("dev", "test"):
            assert 0.0 <= results["methods"][method][split]["weighted_f1"] <= 1.0


def test_merged_folder_reloads_and_reproduces_the_dfwe_test_score(demo_run):
    from dfwe.modeling import register_auto_classes

    results = json.loads((demo_run / "results.json").read_text())
    register_auto_classes()
    model = AutoModelForSequenceClassification.from_pretrained(str(demo_run / "merged"))
    assert type(model).__name__ == "DfweForSequenceClassification" and model.config.num_labels == 7
    info = json.loads((demo_run / "merged" / "dfwe.json").read_text())
    assert info["preprocessing"]["max_length"] == results["config"]["data"]["max_length"]
    assert info["labels"] == results["task"]["labels"] and info["shape"] == "classification"
    assert info["pooling"] == model.config.pooling == "mean"
    task_dir = next((demo_run / "work").glob("suite-*/demo_emotion"))
    scored = dfwe("evaluate", str(demo_run / "merged"), "--task", str(task_dir), "--split", "test")
    assert scored.returncode == 0, scored.stderr
    scores = json.loads(scored.stdout)
    for metric in ("weighted_f1", "accuracy", "macro_f1"):
        assert scores[metric] == pytest.approx(results["methods"]["dfwe"]["test"][metric], abs=1e-9)
    assert json.loads((demo_run / "merged" / "dfwe.json").read_text())["weights"] == results["methods"]["dfwe"]["weights"]


def test_second_run_into_same_out_is_refused_and_leaves_results(demo_run):
    before = (demo_run / "results.json").read_bytes()
    again = dfwe("demo", "--out", str(demo_run), *REDUCED)
    assert again.returncode == 2
    assert again.stderr.count("\n") == 1 and "--resume" in again.stderr
    assert (demo_run / "results.json").read_bytes() == before


def test_resume_reuses_everything_and_gives_the_same_results(demo_run):
    before = json.loads((demo_run / "results.json").read_text())
    again = dfwe("demo", "--out", str(demo_run), "--resume", *REDUCED)
    assert again.returncode == 0, again.stderr
    after = json.loads((demo_run / "results.json").read_text())
    assert after["methods"] == before["methods"]
