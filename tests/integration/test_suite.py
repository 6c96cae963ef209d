"""``dfwe bench --suite``: every task shape trains, merges, searches, evaluates and exports through one code path.

A tiny suite with one task per shape (classification, multilabel, span, multiple choice); each is the target in
turn with the other three as its sources, on a tiny BERT, one seed, FETA's dialogue sampling.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import tiny_suite_and_base

AUTO_CLASS = {"classification": "AutoModelForSequenceClassification", "multilabel": "AutoModelForSequenceClassification",
              "span": "AutoModelForQuestionAnswering", "multiple_choice": "AutoModelForMultipleChoice"}


def dfwe(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dfwe.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "DFWE_PROGRESS": "0"})


@pytest.fixture(scope="module")
def suite_run(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("suite")
    suite, base = tiny_suite_and_base(root)
    config = {"data": {"data_dir": str(suite), "target": "emo", "sources": ["rc"], "sampling": "dialogues",
                       "fraction": 0.5, "max_length": {"default": 24, "qa": 32}, "stride": 8},
              "model": {"base": str(base)}, "experts": {"train": {"epochs": 1, "batch_size": 8}, "temperature": 2.0},
              "target": {"head": "shared", "train": {"epochs": 1, "batch_size": 8, "linear_probe": True,
                                                     "freeze_head": True}},
              "merge": {"head": "refit"}, "search": {"budget": 3, "init": "greedy"},
              "eval": {"bootstrap": 20, "validation": True}}
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    out = root / "out"
    done = dfwe("bench", "--suite", str(suite), "--config", str(root / "config.yaml"), "--seeds", "0",
                "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "average" in done.stdout
    return suite, out


def test_every_target_and_the_average_are_reported(suite_run):
    suite, out = suite_run
    results = json.loads((out / "results.json").read_text())
    assert set(results["targets"]) == {"emo", "qa", "rc", "rel"}
    shapes = {name: target["task"]["shape"] for name, target in results["targets"].items()}
    assert shapes == {"emo": "classification", "rel": "multilabel", "qa": "span", "rc": "multiple_choice"}
    for name, target in results["targets"].items():
        metric = target["task"]["metric"]
        assert metric == {"emo": "weighted_f1", "rel": "micro_f1", "qa": "token_f1", "rc": "accuracy"}[name]
        methods = target["seeds"]["0"]["methods"]
        assert {"base-ft", "multitask-ft", "best-expert-ft", "uniform-soup", "greedy-soup", "logit-ensemble",
                "dfwe"} <= set(methods)
        assert set(target["seeds"]["0"]["ingredients"]) == {"base-ft", "multitask-ft",
                                                             *(f"expert-ft:{s}" for s in results["targets"] if s != name)}
        for method in ("dfwe", "best-expert-ft"):
            delta = target["transfer"][method]
            assert delta["per_seed"][0] == pytest.approx(methods[method]["test"][metric] - methods["base-ft"]["test"][metric])
    for method, entry in results["average"].items():
        scores = [t["seeds"]["0"]["methods"][method]["test"][t["task"]["metric"]] for t in results["targets"].values()]
        assert entry["score"]["mean"] == pytest.approx(sum(scores) / 4)
    assert results["average"]["base-ft"]["transfer_delta"]["mean"] == pytest.approx(0.0)


def test_experts_are_trained_once_and_shared_by_every_target(suite_run):
    _, out = suite_run
    folders = sorted(p.name.rsplit("-", 1)[0] for p in (out / "cache" / "experts").iterdir())
    assert folders == ["emo", "multitask", "multitask", "multitask", "multitask", "qa", "rc", "rel"]


def test_submission_files_have_feta_formats(suite_run):
    suite, out = suite_run
    for task in ("emo", "rel", "qa", "rc"):
        test_ids = [json.loads(line)["id"] for line in (suite / task / "test.jsonl").read_text().splitlines()]
        for file in ("baseline_predictions.csv", "predictions.csv"):
            rows = list(csv.reader((out / "submission" / "seed-0" / task / file).read_text().splitlines()))
            assert [r[0] for r in rows] == test_ids and all(len(r) == 2 for r in rows)
            values = [r[1] for r in rows]
            if task == "emo":
                assert all(v in {"0", "1", "2"} for v in values)  # class ids of (happy, ok, sad)
            elif task == "rel":
                assert all(json.loads(v) in ([0, 0, 1], [0, 1, 0], [1, 0, 0], [0, 1, 1], [1, 0, 1], [1, 1, 0],
                                             [1, 1, 1]) for v in values)
            elif task == "rc":
                assert all(v in {"ross", "rachel", "hi"} for v in values)


def test_units_rebuild_the_suites_paired_intervals_and_transfer_deltas_from_predictions(suite_run, tmp_path):
    suite, out = suite_run
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "feta_friends.py"
    units = tmp_path / "units"
    made = subprocess.run([sys.executable, str(script), "units", "--run", str(out), "--units", str(units)],
                          capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    assert sorted(p.name for p in (units / "seed-0").iterdir()) == ["emo.json", "qa.json", "rc.json", "rel.json"]
    # a unit already there is kept (a newer run's, say) unless --overwrite
    original = (units / "seed-0" / "rel.json").read_text()
    (units / "seed-0" / "rel.json").write_text("{}")
    again = subprocess.run([sys.executable, str(script), "units", "--run", str(out), "--units", str(units)],
                           capture_output=True, text=True)
    assert again.returncode == 0 and again.stdout == "" and again.stderr.count("kept ") == 4
    assert (units / "seed-0" / "rel.json").read_text() == "{}"
    replaced = subprocess.run([sys.executable, str(script), "units", "--run", str(out), "--units", str(units),
                               "--overwrite"], capture_output=True, text=True)
    assert replaced.returncode == 0 and (units / "seed-0" / "rel.json").read_text() == original
    table_file = tmp_path / "table.json"
    # the suite ran with 20 resamples and seed 0: the table pools with the same, so intervals match exactly
    built = subprocess.run([sys.executable, str(script), "table", "--units", str(units), "--suite", str(suite),
                            "--json", str(table_file), "--bootstrap", "20"], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    table, results = json.loads(table_file.read_text()), json.loads((out / "results.json").read_text())
    assert table["seeds"] == [0]
    for name, target in results["targets"].items():
        # units keep the test predictions only: the run's validation intervals stay in the run
        assert table["targets"][name]["paired"] == {"test": target["paired"]["test"]}
        assert table["targets"][name]["transfer"] == target["transfer"]
        assert table["targets"][name]["summary"] == target["summary"]
    assert table["average"] == results["average"]
    for name, target in results["targets"].items():
        dfwe, unit = target["seeds"]["0"]["methods"]["dfwe"], json.loads((units / "seed-0" / f"{name}.json").read_text())
        weights = table["targets"][name]["dfwe_weights"]
        assert list(weights) == dfwe["ingredients"]
        assert [w["mean"] for w in weights.values()] == pytest.approx(np.mean(dfwe["weights"], axis=0).tolist())
        assert sum(w["mean"] for w in weights.values()) == pytest.approx(1.0)  # the simplex, averaged over layers
        # every candidate's seconds, from the seed's search journal
        assert len(unit["search_candidate_seconds"]) == target["seeds"]["0"]["search"]["evaluations"]
        assert all(seconds > 0 for seconds in unit["search_candidate_seconds"])
    # one target's dfwe minus base-ft, averaged over the four targets, is the mean of the four differences
    expected = sum(t["paired"]["test"]["base-ft"][t["task"]["metric"]]["mean"]
                   for t in results["targets"].values()) / 4
    assert table["average_paired"]["base-ft"]["mean"] == pytest.approx(expected)
    # FETA's challenge score: transfer delta + 0.1 x base-ft, averaged over targets
    challenge = sum(t["transfer"]["dfwe"]["mean"] + 0.1 * t["seeds"]["0"]["methods"]["base-ft"]["test"][t["task"]["metric"]]
                    for t in results["targets"].values()) / 4
    assert table["challenge"]["dfwe"]["mean"] == pytest.approx(challenge)
    # a target with a second seed is summarised over both; the averages stay over the seeds every target has
    second = json.loads((units / "seed-0" / "emo.json").read_text()) | {"seed": 1}
    (units / "seed-1").mkdir()
    (units / "seed-1" / "emo.json").write_text(json.dumps(second))
    rebuilt_table = subprocess.run([sys.executable, str(script), "table", "--units", str(units), "--suite", str(suite),
                                    "--json", str(table_file), "--bootstrap", "20"], capture_output=True, text=True)
    assert rebuilt_table.returncode == 0, rebuilt_table.stderr
    two = json.loads(table_file.read_text())
    assert two["seeds"] == [0] and two["units"]["emo"] == [0, 1] and two["units"]["qa"] == [0]
    assert sorted(two["targets"]["emo"]["seeds"]) == ["0", "1"] and list(two["targets"]["qa"]["seeds"]) == ["0"]
    assert two["average"] == table["average"] and two["average_paired"] == table["average_paired"]
    emo = two["targets"]["emo"]["summary"]["dfwe"]["test"][results["targets"]["emo"]["task"]["metric"]]
    assert emo["std"] == 0.0 and emo["mean"] == pytest.approx(
        results["targets"]["emo"]["summary"]["dfwe"]["test"][results["targets"]["emo"]["task"]["metric"]]["mean"])
    (units / "seed-1" / "emo.json").unlink()
    (units / "seed-1").rmdir()
    # a later unit folder replaces that target and seed alone (here a rel unit whose timings are marked)
    marked = json.loads((units / "seed-0" / "rel.json").read_text()) | {"timing_seconds": {"search": 12345.0}}
    (tmp_path / "later" / "seed-0").mkdir(parents=True)
    (tmp_path / "later" / "seed-0" / "rel.json").write_text(json.dumps(marked))
    layered = subprocess.run([sys.executable, str(script), "table", "--units", str(units), str(tmp_path / "later"),
                              "--suite", str(suite), "--json", str(table_file), "--bootstrap", "20"],
                             capture_output=True, text=True)
    assert layered.returncode == 0, layered.stderr
    replaced = json.loads(table_file.read_text())
    assert replaced["targets"]["rel"]["seeds"]["0"]["timing_seconds"] == {"search": 12345.0}
    assert replaced["targets"]["emo"]["seeds"] == table["targets"]["emo"]["seeds"]
    assert replaced["average"] == table["average"] and replaced["unit_folders"] == [str(units), str(tmp_path / "later")]
    # --like: the table over the targets and seeds another folder holds (here two of the four), read from --units
    for name in ("emo", "rel"):
        (tmp_path / "like" / "seed-0").mkdir(parents=True, exist_ok=True)
        (tmp_path / "like" / "seed-0" / f"{name}.json").write_text(json.dumps({"target": name, "seed": 0}))
    liked = subprocess.run([sys.executable, str(script), "table", "--units", str(units),
                            "--like", str(tmp_path / "like"), "--suite", str(suite), "--json", str(table_file),
                            "--bootstrap", "20"],
                           capture_output=True, text=True)
    assert liked.returncode == 0, liked.stderr
    pair = json.loads(table_file.read_text())
    assert pair["units"] == {"emo": [0], "rel": [0]} and pair["like"] == [str(tmp_path / "like")]
    assert pair["targets"]["emo"] == table["targets"]["emo"] and pair["targets"]["rel"] == table["targets"]["rel"]
    assert pair["average_paired"]["base-ft"]["mean"] == pytest.approx(
        sum(results["targets"][t]["paired"]["test"]["base-ft"][results["targets"][t]["task"]["metric"]]["mean"]
            for t in ("emo", "rel")) / 2)
    # a --like folder holding none of them: one line, exit 2, the earlier table untouched
    before = table_file.read_bytes()
    empty = subprocess.run([sys.executable, str(script), "table", "--units", str(units),
                            "--like", str(tmp_path / "no-such-folder"), "--suite", str(suite),
                            "--json", str(table_file)],
                           capture_output=True, text=True)
    assert empty.returncode == 2 and empty.stderr.count("\n") == 1 and "no units" in empty.stderr
    assert table_file.read_bytes() == before
    # the Codalab files rebuilt from the units are the run's own, byte for byte
    rebuilt = tmp_path / "submission"
    written = subprocess.run([sys.executable, str(script), "submission", "--units", str(units), "--suite", str(suite),
                              "--out", str(rebuilt)], capture_output=True, text=True)
    assert written.returncode == 0, written.stderr
    files = sorted(p.relative_to(out / "submission") for p in (out / "submission").rglob("*.csv"))
    assert len(files) == 8 and files == sorted(p.relative_to(rebuilt) for p in rebuilt.rglob("*.csv"))
    assert all((rebuilt / f).read_bytes() == (out / "submission" / f).read_bytes() for f in files)


def test_replaying_the_search_rule_on_units_changes_only_those_a_soup_beats_on_dev(suite_run, tmp_path):
    from dfwe.stats import LOWER_IS_BETTER

    _, out = suite_run
    scripts = Path(__file__).resolve().parents[2] / "benchmarks"
    units, replayed = tmp_path / "units", tmp_path / "replayed"

    def replay(source: Path, *extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(scripts / "search_references.py"), "--units", str(source),
                               "--json", str(tmp_path / "replay.json"), *extra], capture_output=True, text=True)

    made = subprocess.run([sys.executable, str(scripts / "feta_friends.py"), "units", "--run", str(out),
                           "--units", str(units)], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    # the run already kept the best of its search and the two soups: its units come back unchanged
    first = replay(units, "--out", str(replayed))
    assert first.returncode == 0, first.stderr
    assert "0 of 4 units keep another point than their run did" in first.stdout
    names = sorted(p.name for p in (units / "seed-0").iterdir())
    assert names == sorted(p.name for p in (replayed / "seed-0").iterdir())
    assert all((replayed / "seed-0" / n).read_bytes() == (units / "seed-0" / n).read_bytes() for n in names)
    # a unit already in --out is kept unless --overwrite
    (replayed / "seed-0" / "emo.json").write_text("{}")
    again = replay(units, "--out", str(replayed))
    assert again.returncode == 0 and again.stderr.count("kept ") == 4
    assert (replayed / "seed-0" / "emo.json").read_text() == "{}"
    forced = replay(units, "--out", str(replayed), "--overwrite")
    assert forced.returncode == 0 and forced.stderr == ""
    assert (replayed / "seed-0" / "emo.json").read_bytes() == (units / "seed-0" / "emo.json").read_bytes()
    # a soup the run did not keep, made strictly better than dfwe on the dev objective, becomes dfwe
    unit = json.loads((units / "seed-0" / "emo.json").read_text())
    soup = "greedy-soup" if unit["search"]["kept"] != "greedy-soup" else "uniform-soup"
    objective = unit["config"]["search"]["objective"]
    better = -1.0 if objective in LOWER_IS_BETTER else 1.0
    unit["methods"][soup]["dev"][objective] = unit["methods"]["dfwe"]["dev"][objective] + better
    (tmp_path / "lowered" / "seed-0").mkdir(parents=True)
    (tmp_path / "lowered" / "seed-0" / "emo.json").write_text(json.dumps(unit))
    taken = replay(tmp_path / "lowered", "--out", str(tmp_path / "taken"))
    assert taken.returncode == 0, taken.stderr
    assert "1 of 1 units keep another point than their run did" in taken.stdout
    new = json.loads((tmp_path / "taken" / "seed-0" / "emo.json").read_text())
    assert new["search"]["kept"] == soup
    assert new["methods"]["dfwe"]["test"] == unit["methods"][soup]["test"]
    assert new["methods"]["dfwe"]["weights"] == [unit["methods"][soup]["weights"]]
    assert new["predictions"]["methods"]["dfwe"] == unit["predictions"]["methods"][soup]
    assert new["search"]["best_objective"] == unit["methods"][soup]["dev"][objective]
    assert {k: v for k, v in new["methods"].items() if k != "dfwe"} == {
        k: v for k, v in unit["methods"].items() if k != "dfwe"}


@pytest.mark.parametrize("task", ["emo", "rel", "qa", "rc"])
def test_merged_model_opens_with_its_auto_class_and_evaluate_reproduces_the_score(suite_run, task):
    import transformers

    from dfwe.modeling import register_auto_classes

    suite, out = suite_run
    run = out / "targets" / task / "seeds" / "0"
    results = json.loads((run / "results.json").read_text())
    register_auto_classes()
    model = getattr(transformers, AUTO_CLASS[results["task"]["shape"]]).from_pretrained(str(run / "merged"))
    assert type(model).__module__ == "dfwe.modeling"
    scored = dfwe("evaluate", str(run / "merged"), "--task", str(suite / task), "--split", "test")
    assert scored.returncode == 0, scored.stderr
    metric = results["task"]["metric"]
    assert json.loads(scored.stdout)[metric] == pytest.approx(results["methods"]["dfwe"]["test"][metric], abs=1e-9)


def test_one_multitask_expert_over_every_tasks_few_sample_set_serves_every_target(tmp_path):
    """experts.multitask_target (FETA's multitask/fine-tune): the multitask expert also trains on the target's
    few-sample train set, so on a suite every target's expert is the union of all tasks, trained once."""
    import torch

    from dfwe.cache import KEY_FILE
    from dfwe.config import config_from_dict
    from dfwe.data.prepare import TaskSplits
    from dfwe.pipeline import prepare_inputs
    from dfwe.train.experts import MULTITASK, train_experts

    suite, base = tiny_suite_and_base(tmp_path)
    tasks = ["emo", "qa", "rc", "rel"]
    multitask = {}
    for target in ("emo", "rel"):
        config = config_from_dict({
            "data": {"data_dir": str(suite), "target": target, "sources": [t for t in tasks if t != target],
                     "sampling": "dialogues", "fraction": 0.5, "max_length": {"default": 24, "qa": 32}, "stride": 8},
            "model": {"base": str(base)},
            "experts": {"train": {"epochs": 1, "batch_size": 8}, "multitask_target": True}})
        base_model, data, _ = prepare_inputs(config, tmp_path / "work")
        experts = train_experts(config.experts, base_model, data.sources, 0, torch.device("cpu"), tmp_path / "experts",
                                TaskSplits(data.train, data.dev, data.prep))
        assert sorted(experts) == sorted([MULTITASK, *config.data.sources])
        multitask[target] = experts[MULTITASK]
    assert multitask["emo"].folder == multitask["rel"].folder
    key = json.loads((multitask["emo"].folder / KEY_FILE).read_text())
    assert key["order"] == tasks and sorted(key["tasks"]) == tasks
    assert len(list((tmp_path / "experts").glob(f"{MULTITASK}-*"))) == 1


def test_a_resumed_suite_reads_finished_seeds_back_and_scores_again_only_what_changed(suite_run):
    """``--resume`` of a finished suite scores nothing again: each seed is read back from its ``predictions.json``
    with every per-example statistic rebuilt, so the pooled intervals (test and validation), the averages and the
    Codalab files come out as they were. An edited held-out example changes that target's inputs: it alone is
    scored again. (Last in this module: it edits the suite.)"""
    suite, out = suite_run
    seeds = {task: out / "targets" / task / "seeds" / "0" for task in ("emo", "qa", "rc", "rel")}

    def seed_results() -> dict[str, bytes]:  # each holds its run's timings: a seed scored again rewrites them
        return {task: (folder / "results.json").read_bytes() for task, folder in seeds.items()}

    def resume() -> None:
        done = dfwe("bench", "--suite", str(suite), "--config", str(out.parent / "config.yaml"), "--seeds", "0",
                    "--out", str(out), "--resume")
        assert done.returncode == 0, done.stderr[-3000:]

    before, suite_results = seed_results(), json.loads((out / "results.json").read_text())
    assert set(suite_results["targets"]["emo"]["paired"]) == {"test", "validation"}
    submission = {p: p.read_bytes() for p in (out / "submission").rglob("*.csv")}
    outputs = sorted((out / "cache" / "logits").rglob("*"))
    resume()
    assert seed_results() == before
    assert json.loads((out / "results.json").read_text()) == suite_results
    assert {p: p.read_bytes() for p in (out / "submission").rglob("*.csv")} == submission
    assert sorted((out / "cache" / "logits").rglob("*")) == outputs

    test_file = suite / "emo" / "test.jsonl"
    rows = [json.loads(line) for line in test_file.read_text().splitlines()]
    rows[0]["label"] = next(label for label in ("happy", "sad", "ok") if label != rows[0]["label"])
    test_file.write_text("".join(json.dumps(row) + "\n" for row in rows))
    resume()
    after = seed_results()
    assert after["emo"] != before["emo"]
    assert {task: after[task] for task in ("qa", "rc", "rel")} == {task: before[task] for task in ("qa", "rc", "rel")}
    emo = json.loads(after["emo"])
    gold = {row["id"]: row["label"] for row in rows}
    saved = json.loads((seeds["emo"] / "predictions.json").read_text())
    assert emo["methods"]["dfwe"]["test"]["accuracy"] == pytest.approx(
        np.mean([p == gold[i] for i, p in zip(saved["ids"], saved["methods"]["dfwe"])]))
