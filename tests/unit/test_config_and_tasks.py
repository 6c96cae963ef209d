"""Config validation and task loading report bad input as one clear message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import REPO, friends_rows, write_task

from dfwe.config import RunConfig, config_from_dict, demo_config_path, friends_config_path, load_config
from dfwe.data.tasks import load_task
from dfwe.errors import BadInput


def test_shipped_configs_load_and_repository_copies_are_the_same_files():
    for packaged, shipped in ((demo_config_path(), REPO / "configs" / "demo.yaml"),
                              (friends_config_path(), REPO / "configs" / "friends.yaml")):
        assert isinstance(load_config(packaged), RunConfig)
        assert shipped.read_text() == packaged.read_text()


def test_search_objective_on_test_data_is_refused():
    with pytest.raises(BadInput, match="search.objective_split.*dev data only"):
        config_from_dict({"data": {"synthetic": {}, "target": "a", "sources": ["b"]},
                          "search": {"objective_split": "test"}})


def test_bad_value_names_the_key_and_value():
    with pytest.raises(BadInput) as error:
        config_from_dict({"data": {"synthetic": {}, "target": "a", "sources": ["b"]}, "search": {"budget": 0}})
    assert "search.budget" in str(error.value) and "0" in str(error.value)
    assert "\n" not in str(error.value)


def test_missing_split_file(tmp_path):
    folder = write_task(tmp_path / "t", {"train": friends_rows("tr", ["a", "b"], 3), "dev": friends_rows("d", ["a"], 1)})
    with pytest.raises(BadInput, match=r"test\.jsonl: missing"):
        load_task(folder)


def test_malformed_line_is_reported_with_its_number(tmp_path):
    folder = write_task(tmp_path / "t", {s: friends_rows(s, ["a", "b"], 3) for s in ("train", "dev", "test")})
    with (folder / "dev.jsonl").open("a") as handle:
        handle.write('{"id": "broken", "label": \n')
    with pytest.raises(BadInput, match=r"dev\.jsonl:7: not valid JSON"):
        load_task(folder)


def test_unknown_label_in_test_names_label_and_file(tmp_path):
    rows = {s: friends_rows(s, ["a", "b"], 3) for s in ("train", "dev", "test")}
    rows["test"][0]["label"] = "zebra"
    folder = write_task(tmp_path / "t", rows)
    with pytest.raises(BadInput, match=r"test\.jsonl:1: label 'zebra' is not one of the task's labels \(a, b\)"):
        load_task(folder)


def test_friends_record_renders_context_then_utterance(small_task):
    example = load_task(small_task).splits["train"][0]
    assert example.text.startswith("Ross: ")
    assert example.context == "Rachel: hi"


SYNTHETIC = {"synthetic": {}, "target": "a", "sources": ["b"]}


def test_target_grid_entries_must_be_training_settings():
    config = config_from_dict({"data": SYNTHETIC, "target": {"grid": [{"lr": 1e-3}, {"lr": 1e-4, "epochs": 3}]}})
    assert config.target.grid == [{"lr": 1e-3}, {"lr": 1e-4, "epochs": 3}]
    with pytest.raises(BadInput, match=r"target\.grid: .*'learning_rate' is not a training setting"):
        config_from_dict({"data": SYNTHETIC, "target": {"grid": [{"lr": 1e-3}, {"learning_rate": 1e-3}]}})
    with pytest.raises(BadInput) as error:  # a known setting with a bad value is refused too
        config_from_dict({"data": SYNTHETIC, "target": {"grid": [{"lr": -1}]}})
    assert "lr" in str(error.value) and "-1" in str(error.value)
    with pytest.raises(BadInput, match="epochs: 0 trains nothing"):
        config_from_dict({"data": SYNTHETIC, "target": {"grid": [{"epochs": 0}]}})


@pytest.mark.parametrize("fraction", [0, -0.1, 1.5, {"default": 0.1, "question_answering": 0.0}])
def test_dialogue_fraction_must_be_in_zero_one(fraction):
    with pytest.raises(BadInput, match=r"data\.fraction: .*must be in \(0, 1\]"):
        config_from_dict({"data": {**SYNTHETIC, "fraction": fraction}})


def test_dialogue_fraction_per_task_and_default():
    data = config_from_dict({"data": {**SYNTHETIC, "fraction": 1}}).data
    assert data.fraction_of("anything") == 1.0
    data = config_from_dict({"data": {**SYNTHETIC, "fraction": {"default": 0.2, "question_answering": 0.5}}}).data
    assert data.fraction_of("question_answering") == 0.5 and data.fraction_of("personality_detection") == 0.2
    assert config_from_dict({"data": {**SYNTHETIC, "fraction": {"x": 0.3}}}).data.fraction_of("y") == 0.1


def test_head_rules_are_literals():
    config = config_from_dict({"data": SYNTHETIC})
    assert config.target.head == "own" and config.merge.head == "average"
    config = config_from_dict({"data": SYNTHETIC, "target": {"head": "shared"}, "merge": {"head": "refit"}})
    assert config.target.head == "shared" and config.merge.head == "refit"
    with pytest.raises(BadInput, match=r"target\.head: .*'shared' or 'own'.*'both'"):
        config_from_dict({"data": SYNTHETIC, "target": {"head": "both"}})
    with pytest.raises(BadInput, match=r"merge\.head: .*'average' or 'refit'.*'mean'"):
        config_from_dict({"data": SYNTHETIC, "merge": {"head": "mean"}})


def _task_with_spec(folder: Path, spec: dict, rows: dict[str, list[dict]] | None = None) -> Path:
    write_task(folder, rows or {s: friends_rows(s, ["a", "b"], 3) for s in ("train", "dev", "test")})
    (folder / "task.json").write_text(json.dumps(spec))
    return folder


def test_task_json_sets_shape_labels_and_metric(tmp_path):
    folder = _task_with_spec(tmp_path / "t", {"type": "classification", "labels": ["b", "a", "c"],
                                               "metric": "macro_f1"})
    task = load_task(folder)
    assert (task.shape, task.labels, task.metric) == ("classification", ("b", "a", "c"), "macro_f1")


def test_task_json_with_unknown_shape_is_bad_input_naming_it(tmp_path):
    folder = _task_with_spec(tmp_path / "t", {"type": "regression", "labels": ["a", "b"]})
    with pytest.raises(BadInput, match=r"task\.json: type 'regression' is not a task shape"):
        load_task(folder)


def test_dev_label_outside_task_json_labels_names_file_and_line(tmp_path):
    rows = {s: friends_rows(s, ["a", "b"], 3) for s in ("train", "dev", "test")}
    rows["dev"][2]["label"] = "c"
    folder = _task_with_spec(tmp_path / "t", {"type": "classification", "labels": ["a", "b"]}, rows)
    with pytest.raises(BadInput, match=r"dev\.jsonl:3: label 'c' is not one of the task's labels \(a, b\)"):
        load_task(folder)


def test_resume_compares_configs_key_by_key_with_missing_keys_as_unset():
    from dfwe.io import config_differences

    saved = {"seed": 0, "search": {"budget": 60, "init": "uniform"}}
    # a setting added since the run was saved, left unset, does not block resuming it
    assert config_differences(saved, {**saved, "threads": None, "search": {**saved["search"], "crossfit": None}}) == []
    assert config_differences(saved, {**saved, "threads": 2}) == ["threads"]
    assert config_differences(saved, {"seed": 1, "search": {"budget": 60, "init": "greedy"}}) == ["search.init", "seed"]
    assert config_differences(saved, {"seed": 0}) == ["search.budget", "search.init"]
