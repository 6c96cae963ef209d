"""Nothing lost, nothing silently accepted (issue 18, classes 1-4).

1. A failed ``--overwrite`` run, at whatever stage and for whatever reason (bad input, an internal error,
   Ctrl-C), leaves the earlier results byte for byte as they were and nothing beside them; a successful one
   replaces them whole, through a symlinked ``--out`` too, with the user's umask.
2. Files of the wrong structure or encoding, and ``--set`` values that cannot apply, are one line and exit 2.
3. Nonsense values are refused: repeated ids, repeated labels, null labels, out-of-bound flags, infinite or
   NaN numbers.
4. A model folder holding only pickle weights is refused before anything is loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import friends_rows, perturbed_copies, write_task, write_tiny_suite

import dfwe.pipeline as pipeline
from dfwe import cli
from dfwe.config import demo_config_path, load_config
from dfwe.errors import BadInput
from dfwe.pipeline import run

# the shipped FETA config's per-task values re-keyed by the tiny suite's tasks
FETA_KEYS_FOR_TINY_SUITE = ("--set", "data.fraction=0.5", "--set", "data.max_length={default: 24, qa: 32}",
                            "--set", "target.pooling={default: base, rel: first_segment, emo: first_segment}")
TINY_DEMO = {"data.synthetic.train_size": 300, "data.synthetic.dev_size": 60, "data.synthetic.test_size": 120,
             "model.tiny.pretrain_steps": 20, "experts.train.epochs": 1, "target.train.epochs": 2,
             "target.grid": None, "search.budget": 4, "search.coarse_budget": 2, "eval.bootstrap": 20}


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_bad_input(done: subprocess.CompletedProcess, *needles: str) -> None:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    for needle in needles:
        assert needle in lines[0], lines[0]


# ---------------------------------------------------------------- 1. a failed --overwrite run loses nothing

@pytest.fixture(scope="module")
def complete_run(tmp_path_factory) -> tuple[Path, Path]:
    """A complete earlier run, and the cache it shares with the runs that try to replace it."""
    root = tmp_path_factory.mktemp("overwrite")
    run(load_config(demo_config_path(), TINY_DEMO), root / "runs" / "earlier", cache=root / "cache")
    return root / "runs" / "earlier", root / "cache"


def _failing(exception: BaseException):
    def fail(*args, **kwargs):
        raise exception
    return fail


def _fail_after_export(exception: BaseException):
    """The writing stage: merged/ and mergekit.yaml are written, then results.json fails."""
    original = pipeline.write_outputs

    def write(out, results, fold, base=None, prep=None):
        import dfwe.report.write as writer

        real = writer.atomic_write_json
        writer.atomic_write_json = _failing(exception)
        try:
            original(out, results, fold, base, prep)
        finally:
            writer.atomic_write_json = real
    return write


STAGES = {"data": "prepare_inputs", "experts": "train_experts", "target": "fine_tune_ingredients",
          "search": "search_stage", "evaluate": "score_methods", "writing": None}
FAILURES = {"internal error": RuntimeError("boom"), "bad input": BadInput("bad"), "Ctrl-C": KeyboardInterrupt()}


@pytest.mark.parametrize("failure", list(FAILURES))
@pytest.mark.parametrize("stage", list(STAGES))
def test_a_failure_at_any_stage_of_an_overwrite_run_leaves_the_earlier_folder_byte_identical(
        stage, failure, complete_run, monkeypatch):
    earlier, cache = complete_run
    before = snapshot(earlier)
    exception = FAILURES[failure]
    replacement = _fail_after_export(exception) if stage == "writing" else _failing(exception)
    monkeypatch.setattr(pipeline, STAGES[stage] or "write_outputs", replacement)
    config = load_config(demo_config_path(), {**TINY_DEMO, "search.budget": 5})  # a different run
    with pytest.raises(type(exception)):
        run(config, earlier, overwrite=True, cache=cache)
    assert snapshot(earlier) == before
    assert sorted(p.name for p in earlier.parent.iterdir()) == ["earlier"]  # no half-built folder left beside it


def test_a_successful_overwrite_replaces_the_folder_whole_through_a_symlink_with_the_umask(complete_run, tmp_path):
    earlier, cache = complete_run
    target = tmp_path / "real"
    target.mkdir()
    (target / "stale.txt").write_text("from an earlier run\n")
    (target / "config.yaml").write_text("seed: 0\n")
    link = tmp_path / "link"
    link.symlink_to(target)
    previous = os.umask(0o027)
    try:
        run(load_config(demo_config_path(), TINY_DEMO), link, overwrite=True, cache=cache)
    finally:
        os.umask(previous)
    assert link.is_symlink() and link.resolve() == target.resolve()
    assert not (target / "stale.txt").exists() and (target / "results.json").is_file()
    assert stat.S_IMODE(target.stat().st_mode) == 0o750
    assert stat.S_IMODE((target / "results.json").stat().st_mode) == 0o640
    assert stat.S_IMODE((target / "merged").stat().st_mode) == 0o750
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]


def _friends_run(tmp_path: Path, base: Path) -> tuple[Path, Path]:
    data = tmp_path / "data"
    for name in ("target", "source"):
        write_task(data / name, {"train": friends_rows(f"{name}tr", ["a", "b"], 6),
                                 "dev": friends_rows(f"{name}dv", ["a", "b"], 2),
                                 "test": friends_rows(f"{name}te", ["a", "b"], 2)})
    config = {"data": {"data_dir": str(data), "target": "target", "sources": ["source"], "shots": 2},
              "model": {"base": str(base)}, "search": {"budget": 2}, "experts": {"train": {"epochs": 1}},
              "target": {"train": {"epochs": 1}}, "eval": {"bootstrap": 0, "barriers": False}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, data


@pytest.mark.parametrize("setting,needles", [
    ("seed=-1", ("seed", "greater than or equal to 0")),
    ("seed=4294967296", ("seed", "less than 4294967296")),
    ("runtime.device=tpu", ("device", "'tpu'")),
    # a per-task value keyed by a misspelt task would silently fall back to the default
    ("target.pooling={default: base, sorce: first_segment}", ("target.pooling", "'sorce'", "source, target")),
    ("data.max_length={default: 24, Target: 32}", ("data.max_length", "'Target'", "'default'")),
    ("experts.pooling={default: base, sources: first_segment}", ("experts.pooling", "'sources'", "source, target")),
    ("experts.pooling={source: last_token}", ("experts.pooling", "last_token")),
])
def test_a_bad_config_value_with_overwrite_changes_nothing(dfwe_here, setting, needles, tmp_path, tiny_base, earlier_run):
    config, _ = _friends_run(tmp_path, tiny_base)
    before = snapshot(earlier_run)
    done = dfwe_here("run", str(config), "--out", str(earlier_run), "--overwrite", "--set", setting)
    assert_bad_input(done, *needles)
    assert snapshot(earlier_run) == before


def test_a_bad_record_in_one_target_of_a_suite_is_refused_before_anything_runs(dfwe_here, tmp_path, earlier_run):
    suite = write_tiny_suite(tmp_path / "suite")
    test = suite / "rc" / "test.jsonl"
    rows = test.read_text().splitlines()
    rows[-1] = rows[-1].replace('"label": "', '"label": "nobody-', 1)
    test.write_text("\n".join(rows) + "\n")
    before = snapshot(earlier_run)
    done = dfwe_here("bench", "--suite", str(suite), "--seeds", "0", "--out", str(earlier_run), "--overwrite",
                     "--set", "model.base=tiny", *FETA_KEYS_FOR_TINY_SUITE)
    assert_bad_input(done, f"{test}:{len(rows)}", "nobody-")
    assert snapshot(earlier_run) == before


def test_a_per_task_value_naming_no_task_of_a_suite_is_refused_before_anything_runs(dfwe_here, tmp_path,
                                                                                    earlier_run):
    suite = write_tiny_suite(tmp_path / "suite")
    before = snapshot(earlier_run)
    done = dfwe_here("bench", "--suite", str(suite), "--seeds", "0", "--out", str(earlier_run), "--overwrite",
                     "--set", "model.base=tiny")  # the shipped FETA config keys its values by FETA's tasks
    assert_bad_input(done, "data.max_length", "'character_identification'", str(suite), "emo, qa, rc, rel")
    done = dfwe_here("bench", "--suite", str(suite), "--seeds", "0", "--out", str(earlier_run), "--overwrite",
                     "--set", "model.base=tiny", *FETA_KEYS_FOR_TINY_SUITE, "--set", "target.pooling={rel: mean, emotion: cls}")
    assert_bad_input(done, "target.pooling", "'emotion'")
    assert snapshot(earlier_run) == before


def test_mergekit_refuses_an_occupied_out_without_overwrite(dfwe_here, tiny_base, tmp_path, earlier_run):
    folders = perturbed_copies(tiny_base, tmp_path / "ckpts", 2)
    merged = tmp_path / "merged"
    assert dfwe_here("merge", *map(str, folders), "--weights", "0.5", "0.5", "--out", str(merged)).returncode == 0
    before = snapshot(earlier_run)
    done = dfwe_here("mergekit", str(merged / "mergekit.yaml"), str(earlier_run))
    assert_bad_input(done, str(earlier_run), "already holds results", "--overwrite")
    assert snapshot(earlier_run) == before


# ---------------------------------------------------------------- 2. structure and encoding: one line, exit 2

def _task(tmp_path: Path, spec: object) -> Path:
    folder = write_task(tmp_path / "t", {s: friends_rows(s, ["a", "b"], 3) for s in ("train", "dev", "test")})
    (folder / "task.json").write_text(json.dumps(spec))
    return folder


@pytest.mark.parametrize("spec,needle", [
    (["classification"], "expected a JSON object"),
    ({"type": "classification", "labels": 3}, "labels: Input should be a valid list"),
    ({"type": "classification", "labels": ["a", "b", "a"]}, "label 'a' is listed twice"),
    ({"type": "classification", "metric_ignore_labels": "a"}, "metric_ignore_labels"),
])
def test_a_task_json_of_the_wrong_structure_is_bad_input(dfwe_here, spec, needle, tmp_path, tiny_base):
    folder = _task(tmp_path, spec)
    done = dfwe_here("evaluate", str(perturbed_copies(tiny_base, tmp_path / "m", 1)[0]), "--task", str(folder))
    assert_bad_input(done, str(folder / "task.json"), needle)


def test_a_config_file_that_is_not_utf8_names_its_line_and_column(dfwe_here, tmp_path, earlier_run):
    config = tmp_path / "config.yaml"
    config.write_bytes(b"seed: 0\ndata:\n  target: caf\xe9\n")
    before = snapshot(earlier_run)
    done = dfwe_here("run", str(config), "--out", str(earlier_run), "--overwrite")
    assert_bad_input(done, f"{config}:3:14", "not UTF-8", "0xe9")
    assert snapshot(earlier_run) == before


@pytest.mark.parametrize("setting,needles", [
    ("search.budget=[1,", ("--set search.budget=[1,", "not valid YAML")),
    ("seed.value=3", ("--set seed.value:", "'seed' is a value")),
])
def test_a_set_value_that_cannot_apply_is_bad_input(dfwe_here, setting, needles, earlier_run):
    before = snapshot(earlier_run)
    done = dfwe_here("demo", "--out", str(earlier_run), "--overwrite", "--set", setting)
    assert_bad_input(done, *needles)
    assert snapshot(earlier_run) == before


@pytest.mark.parametrize("file,content,needle", [
    ("dfwe.json", b"{not json", "dfwe.json:1:2: not valid JSON"),
    ("dfwe.json", b'{"task": "t", "shape": "classification"}', "dfwe.json: labels: Field required"),
    ("dfwe.json", b"[1, 2]", "dfwe.json: expected a JSON object"),
    ("config.json", b"{\n  \"model_type\": \n", "config.json:3:1: not valid JSON"),
    ("config.json", b'{"hidden_size": 3}', "config.json: not a transformers config"),
])
def test_a_corrupt_model_folder_is_bad_input(dfwe_here, file, content, needle, tiny_base, tmp_path):
    folder = perturbed_copies(tiny_base, tmp_path / "m", 1)[0]
    (folder / file).write_bytes(content)
    task = write_task(tmp_path / "t", {s: friends_rows(s, ["neg", "pos"], 2) for s in ("train", "dev", "test")})
    for command in (["evaluate", str(folder), "--task", str(task)],
                    ["search", str(folder), str(folder), "--dev", str(task / "dev.jsonl"), "--out", str(tmp_path / "o")]):
        assert_bad_input(dfwe_here(*command), needle)
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------- 3. nonsense is refused, naming it

def test_two_records_with_one_id_in_a_split_are_refused(dfwe_here, tmp_path, tiny_base):
    rows = friends_rows("dv", ["neg", "pos"], 3)
    rows[4]["id"] = rows[1]["id"]
    dev = write_task(tmp_path / "d", {"dev": rows}) / "dev.jsonl"
    folders = perturbed_copies(tiny_base, tmp_path / "m", 2)
    done = dfwe_here("search", *map(str, folders), "--dev", str(dev), "--out", str(tmp_path / "o"))
    assert_bad_input(done, f"{dev}:5", f"id '{rows[1]['id']}' is already the id of line 2")


@pytest.mark.parametrize("label", [None, "", True, ["neg"]])
def test_a_record_without_a_label_name_is_refused(dfwe_here, label, tmp_path, tiny_base):
    rows = friends_rows("dv", ["neg", "pos"], 3)
    rows[2]["label"] = label
    dev = write_task(tmp_path / "d", {"dev": rows}) / "dev.jsonl"
    folders = perturbed_copies(tiny_base, tmp_path / "m", 2)
    done = dfwe_here("search", *map(str, folders), "--dev", str(dev), "--out", str(tmp_path / "o"))
    assert_bad_input(done, f"{dev}:3", "field 'label' must be a label name")


@pytest.mark.parametrize("flags,needle", [
    (["--max-length", "0"], "max_length: Input should be greater than or equal to 8"),
    (["--context-turns", "-1"], "context_turns: Input should be greater than or equal to 0"),
    (["--stride", "0"], "stride: Input should be greater than or equal to 1"),
])
def test_preprocessing_flags_share_the_configs_bounds(dfwe_here, flags, needle, tiny_base, tmp_path):
    folders = perturbed_copies(tiny_base, tmp_path / "m", 2)
    task = write_task(tmp_path / "t", {s: friends_rows(s, ["neg", "pos"], 2) for s in ("train", "dev", "test")})
    for command in (["evaluate", str(folders[0]), "--task", str(task)],
                    ["search", *map(str, folders), "--dev", str(task / "dev.jsonl"), "--out", str(tmp_path / "o")]):
        assert_bad_input(dfwe_here(*command, *flags), needle)
    with pytest.raises(BadInput, match=needle.replace("max_length", r"data\.max_length")):
        load_config(demo_config_path(), {"data.max_length": 0, "data.context_turns": -1, "data.stride": 0}
                    if "max_length" in needle else {"data.context_turns": -1} if "context" in needle
                    else {"data.stride": 0})


@pytest.mark.parametrize("overrides,needle", [
    ({"target.train.lr": float("inf")}, "target.train.lr: Input should be a finite number"),
    ({"search.objective_weights": {"loss": float("nan")}}, "search.objective_weights.loss: Input should be a finite"),
    ({"merge.probe_c": float("inf")}, "merge.probe_c: Input should be a finite number"),
])
def test_infinite_and_nan_numbers_are_refused(overrides, needle):
    with pytest.raises(BadInput, match=needle.replace(".", r"\.")):
        load_config(demo_config_path(), overrides)


def test_search_and_merge_seeds_share_the_configs_bounds(dfwe_here, tiny_base, tmp_path):
    folders = perturbed_copies(tiny_base, tmp_path / "m", 2)
    dev = write_task(tmp_path / "d", {"dev": friends_rows("dv", ["neg", "pos"], 2)}) / "dev.jsonl"
    assert_bad_input(dfwe_here("search", *map(str, folders), "--dev", str(dev), "--seed", "-3", "--out",
                          str(tmp_path / "o")), "--seed", "greater than or equal to 0")
    assert_bad_input(dfwe_here("merge", *map(str, folders), "--weights", "1", "0", "--seed", str(2**40), "--out",
                          str(tmp_path / "o")), "--seed", "less than 4294967296")
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------- 4. pickle is never loaded

def test_a_model_folder_with_only_pickle_weights_is_refused_before_loading(tiny_base, tmp_path, monkeypatch, capsys):
    import torch

    folder = perturbed_copies(tiny_base, tmp_path / "m", 1)[0]
    torch.save({"not": "read"}, folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    loads = []
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(a) or {})
    monkeypatch.setattr(cli, "_quiet_third_party", lambda: None)
    task = write_task(tmp_path / "t", {s: friends_rows(s, ["neg", "pos"], 2) for s in ("train", "dev", "test")})
    capsys.readouterr()  # what building the folder printed
    assert cli.main(["evaluate", str(folder), "--task", str(task)]) == 2
    err = capsys.readouterr().err
    assert "pytorch_model.bin" in err and "pickle" in err and "safetensors" in err and len(err.splitlines()) == 1
    assert loads == []
