"""Config validation and task loading report bad input as one clear message."""

from __future__ import annotations

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
    with pytest.raises(BadInput, match=r"test\.jsonl: label 'zebra'.*never occurs in .*train\.jsonl"):
        load_task(folder)


def test_friends_record_renders_context_then_utterance(small_task):
    example = load_task(small_task).splits["train"][0]
    assert example.text.startswith("Ross: ")
    assert example.context == "Rachel: hi"
