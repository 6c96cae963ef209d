"""Each name list has one home: the config's accepted values and the CLI's choices come from the registries.

For every shape, each metric it reports (and the losses every task has) is accepted as
``target.train.select_metric`` and as ``search.objective``; a span target searched on ``token_f1`` runs end to
end; a metric another shape reports is refused for a task as bad input.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import yaml
from conftest import WORDS, write_tiny_suite

from dfwe.cli import build_parser
from dfwe.config import config_from_dict
from dfwe.data.shapes import METRICS, SHAPES, metrics_of
from dfwe.errors import BadInput
from dfwe.merge.groups import GRANULARITIES
from dfwe.merge.methods import METHODS
from dfwe.search.objective import PENALTIES
from dfwe.search.optimizers import OPTIMIZERS
from dfwe.search.run import SearchConfig
from dfwe.search.spaces import SPACES
from dfwe.train.loop import TrainConfig

DATA = {"data_dir": "unused", "target": "t", "sources": ["s"]}


def dfwe(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dfwe.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "DFWE_PROGRESS": "0"})


def choices(command: str, option: str) -> list[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    return list(next(a for a in sub._actions if option in a.option_strings).choices)


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_every_metric_of_a_shape_is_accepted_for_selection_and_search(shape):
    for metric in ("loss", "calibrated_loss", *SHAPES[shape].metrics):
        assert metric in metrics_of(shape)
        config = config_from_dict({"data": DATA, "target": {"train": {"select_metric": metric}},
                                   "search": {"objective": metric, "objective_weights": {metric: 1.0}}})
        assert config.target.train.select_metric == metric and config.search.objective == metric


def test_config_values_and_cli_choices_are_the_registries():
    assert typing.get_args(TrainConfig.model_fields["select_metric"].annotation) == METRICS
    assert typing.get_args(SearchConfig.model_fields["objective"].annotation) == METRICS
    assert typing.get_args(SearchConfig.model_fields["optimizer"].annotation) == OPTIMIZERS
    assert typing.get_args(SearchConfig.model_fields["space"].annotation) == SPACES
    assert typing.get_args(SearchConfig.model_fields["granularity"].annotation) == GRANULARITIES
    assert typing.get_args(SearchConfig.model_fields["penalty"].annotation) == PENALTIES
    assert choices("merge", "--method") == list(METHODS)
    assert choices("merge", "--granularity") == choices("search", "--granularity") == list(GRANULARITIES)
    assert choices("search", "--optimizer") == list(OPTIMIZERS)
    assert choices("search", "--space") == list(SPACES)
    assert choices("search", "--objective") == list(METRICS)
    assert choices("search", "--penalty") == list(PENALTIES)


def test_a_name_no_registry_holds_is_refused_with_one_line():
    with pytest.raises(BadInput, match=r"^config: search\.objective: Input should be 'loss', 'calibrated_loss'"):
        config_from_dict({"data": DATA, "search": {"objective": "bleu"}})
    done = dfwe("merge", "a", "b", "--weights", "1", "1", "--method", "della", "--out", "nowhere")
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1 and "'della'" in done.stderr


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path, Path]:
    from dfwe.train.base import build_tiny_base

    root = tmp_path_factory.mktemp("registries")
    suite = write_tiny_suite(root / "tiny")
    base = build_tiny_base(root / "base", WORDS + ["ross", "rachel", "hi", ":", "who", "@placeholder"], 16, 2, 2, 32,
                           seed=0)
    return root, suite, base


def suite_config(root: Path, suite: Path, base: Path, target: str, sources: list[str], metric: str) -> Path:
    config = {"data": {"data_dir": str(suite), "target": target, "sources": sources, "sampling": "dialogues",
                       "fraction": 0.5, "max_length": {"default": 24, "qa": 32}, "stride": 8},
              "model": {"base": str(base)}, "experts": {"train": {"epochs": 1, "batch_size": 8}},
              "target": {"train": {"epochs": 2, "batch_size": 8, "select_metric": metric}},
              "search": {"budget": 3, "objective": metric}, "eval": {"bootstrap": 20, "barriers": False}}
    path = root / f"{target}-{metric}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_span_target_selects_and_searches_on_token_f1(tiny):
    root, suite, base = tiny
    out = root / "qa-run"
    done = dfwe("run", str(suite_config(root, suite, base, "qa", ["emo"], "token_f1")), "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["task"]["shape"] == "span"
    assert results["search"]["objective"] == "token_f1" and results["search"]["evaluations"] == 3 + 2
    assert results["config"]["target"]["train"]["select_metric"] == "token_f1"
    # every journalled candidate was scored by -token_f1 on dev (lower is better)
    best = results["search"]["best_objective"]
    assert best == pytest.approx(-max(r["token_f1"] for r in journal_metrics(out / "journal.sqlite")))
    assert 0.0 <= results["methods"]["dfwe"]["test"]["token_f1"] <= 1.0


def journal_metrics(path: Path) -> list[dict]:
    import sqlite3

    with sqlite3.connect(str(path)) as db:
        return [json.loads(m) for (m,) in db.execute("SELECT metrics FROM candidates ORDER BY idx")]


def test_a_metric_of_another_shape_is_refused_for_the_task(tiny):
    root, suite, base = tiny
    done = dfwe("run", str(suite_config(root, suite, base, "emo", ["rc"], "token_f1")), "--out", str(root / "emo"))
    assert done.returncode == 2, done.stderr[-3000:]
    assert len(done.stderr.strip().splitlines()) == 1
    assert "'token_f1' is not a metric of task 'emo'" in done.stderr and "weighted_f1" in done.stderr
