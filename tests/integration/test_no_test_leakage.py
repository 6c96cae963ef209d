"""No test example can reach training, early stopping, selection or the search.

Behavioural proof: two runs whose test splits differ (labels permuted, texts replaced) make exactly the same
choices: the same few-sample draws, the same kept epochs, the same best single model, greedy soup and
searched weights, the same journal. White-box check: no test id is ever handed to the training loop or
to the search objective.
"""

from __future__ import annotations

import json
import random
import shutil
import sqlite3
from pathlib import Path

import pytest
from conftest import FRIENDS

from dfwe.config import config_from_dict
from dfwe.data.synthetic import SyntheticConfig, generate_suite
from dfwe.pipeline import run
from dfwe.train.base import build_tiny_base


def _config(data_dir: Path, base: Path) -> dict:
    return {"seed": 3, "data": {"data_dir": str(data_dir), "target": "demo_emotion",
                                "sources": ["demo_sentiment", "demo_mood"], "shots": 4, "max_length": 64},
            "model": {"base": str(base)},
            "target": {"head": "shared", "train": {"lr": 5e-4, "epochs": 4, "batch_size": 8, "select": "best",
                                                   "select_metric": "weighted_f1", "linear_probe": True,
                                                   "freeze_head": True}},
            "experts": {"train": {"lr": 1e-3, "epochs": 2, "batch_size": 32, "select": "best"}},
            "merge": {"head": "refit"},
            "search": {"budget": 8, "granularity": "layer", "objective": "calibrated_loss", "init": "greedy",
                       "coarse_budget": 3, "crossfit": True, "penalty": "anchor", "penalty_strength": 0.5},
            "eval": {"bootstrap": 20}}


def _scramble_test(task: Path) -> None:
    rows = [json.loads(line) for line in (task / "test.jsonl").read_text().splitlines()]
    labels = [r["label"] for r in rows]
    random.Random(0).shuffle(labels)
    for row, label in zip(rows, labels):
        row["label"], row["utterance"] = label, " ".join(reversed(row["utterance"].split()))
    (task / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _journal(path: Path) -> list[tuple]:
    with sqlite3.connect(str(path)) as db:
        return db.execute("SELECT idx, x, objective, fidelity FROM candidates ORDER BY idx").fetchall()


def _kept_epochs(out: Path) -> dict[str, list[int]]:
    """Kept epoch of every expert and ingredient, by name (folders are named ``<name>-<content key>``)."""
    kept: dict[str, list[int]] = {}
    for path in out.glob("work/**/dfwe-train.json"):
        kept.setdefault(path.parent.name.rsplit("-", 1)[0], []).append(json.loads(path.read_text())["kept_epoch"])
    return {name: sorted(epochs) for name, epochs in kept.items()}


def _content_keys(out: Path) -> set[str]:
    return {json.loads(path.read_text())["key"] for path in out.glob("work/**/dfwe-key.json")}


def test_changing_the_test_split_changes_no_choice(tmp_path, monkeypatch):
    suite = tmp_path / "suite"
    vocabulary, _ = generate_suite(suite, SyntheticConfig(train_size=240, dev_size=40, test_size=80), seed=3)
    base = build_tiny_base(tmp_path / "base", vocabulary, 16, 2, 2, 32, seed=3)
    scrambled = tmp_path / "scrambled"
    shutil.copytree(suite, scrambled)
    _scramble_test(scrambled / "demo_emotion")

    seen: list[tuple[str, set[str]]] = []
    import dfwe.merge.fold as fold_module
    import dfwe.search.objective as objective_module
    import dfwe.train.experts as experts_module
    import dfwe.train.loop as loop_module
    import dfwe.train.target as target_module

    def ids_of(sets) -> set[str]:
        return {i for example_set in (sets or {}).values() for i in example_set.encoded.ids}

    def watch_fine_tune(original):
        def wrapped(models, train, dev, *args, **kwargs):
            seen.append(("train", ids_of(train)))
            seen.append(("early stopping", ids_of(dev)))
            return original(models, train, dev, *args, **kwargs)
        return wrapped

    def watch_encoded(what, original):
        def wrapped(model, shape, data, *args, **kwargs):
            seen.append((what, set(data.ids)))
            return original(model, shape, data, *args, **kwargs)
        return wrapped

    monkeypatch.setattr(experts_module, "fine_tune", watch_fine_tune(experts_module.fine_tune))
    monkeypatch.setattr(target_module, "fine_tune", watch_fine_tune(target_module.fine_tune))
    monkeypatch.setattr(target_module, "fit_head", watch_encoded("shared probe", target_module.fit_head))
    monkeypatch.setattr(loop_module, "fit_head", watch_encoded("refit head", loop_module.fit_head))
    monkeypatch.setattr(fold_module, "fit_head", watch_encoded("refit head", fold_module.fit_head))
    def watch_objective(original):
        def wrapped(self, *args, **kwargs):
            for fold in self.folds:  # what each candidate is scored on (a fixed slice of it at low fidelity)
                seen.append(("search objective", set(fold.data.encoded.ids)))
            return original(self, *args, **kwargs)
        return wrapped

    monkeypatch.setattr(objective_module.Objective, "__call__", watch_objective(objective_module.Objective.__call__))

    outs = []
    for data_dir in (suite, scrambled):
        out = tmp_path / f"out-{data_dir.name}"
        results = run(config_from_dict(_config(data_dir, base)), out)
        outs.append((out, results))

    test_ids = {json.loads(line)["id"] for line in (suite / "demo_emotion" / "test.jsonl").read_text().splitlines()}
    assert {what for what, _ in seen} == {"train", "early stopping", "shared probe", "refit head", "search objective"}
    assert all(not ids & test_ids for _, ids in seen), "a test example reached training or the search"

    (a_out, a), (b_out, b) = outs
    assert a["few_shot"] == b["few_shot"]
    assert _kept_epochs(a_out) == _kept_epochs(b_out)
    assert _content_keys(a_out) == _content_keys(b_out)  # the test split is part of no cached artefact's key
    assert a["methods"]["best-expert-ft"]["selected"] == b["methods"]["best-expert-ft"]["selected"]
    assert a["methods"]["greedy-soup"]["weights"] == b["methods"]["greedy-soup"]["weights"]
    assert a["search"]["best_weights"] == b["search"]["best_weights"]
    assert a["search"]["trace"] == b["search"]["trace"]
    assert _journal(a_out / "journal.sqlite") == _journal(b_out / "journal.sqlite")
    for method in a["methods"]:
        assert a["methods"][method]["dev"] == b["methods"][method]["dev"]
    assert a["methods"]["dfwe"]["test"] != b["methods"]["dfwe"]["test"]  # the test split really did change


@pytest.mark.realdata
@pytest.mark.skipif(not FRIENDS.is_dir(), reason="../shared/data/friends is absent")
def test_friends_sources_never_contain_target_test_utterances():
    from dfwe.config import load_config
    from dfwe.data.sampling import few_shot_split, subsample
    from dfwe.data.tasks import load_tasks

    config = load_config(Path(__file__).resolve().parents[2] / "configs" / "friends.yaml",
                         {"data.data_dir": str(FRIENDS)})
    tasks = load_tasks(FRIENDS, [config.data.target, *config.data.sources])
    test_ids = {e.id for e in tasks[config.data.target].splits["test"]}
    for seed in (0, 1, 2):
        shots = few_shot_split(tasks[config.data.target], config.data.shots, config.data.resolved_dev_shots, seed)
        assert not {e.id for e in (*shots.train, *shots.dev)} & test_ids
        for name in config.data.sources:  # MELD sentiment shares utterance ids with MELD emotion
            source = tasks[name]
            used = {e.id for e in subsample(source.splits["train"], config.data.source_max_examples, seed)}
            used |= {e.id for e in subsample(source.splits["dev"], config.data.source_dev_max_examples, seed)}
            assert not used & test_ids
