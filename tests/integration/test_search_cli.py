"""``dfwe search``: journalled and resumable after SIGKILL, exact budgets, Ray workers that reproduce the serial
journal, and bad input as one line with exit code 2."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import friends_rows, journal_rows, perturbed_copies, sigkill_mid_search, write_task


def dfwe(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dfwe.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "DFWE_PROGRESS": "0"})


@pytest.fixture
def checkpoints(tiny_base, tmp_path):
    return perturbed_copies(tiny_base, tmp_path, 3, scale=0.3)


@pytest.fixture
def dev_file(tmp_path) -> Path:
    return write_task(tmp_path / "dev", {"dev": friends_rows("dv", ["neg", "neu", "pos"], 60)}) / "dev.jsonl"


def test_sigkill_mid_search_then_resume_matches_an_uninterrupted_run(checkpoints, dev_file, tmp_path):
    common = [*map(str, checkpoints), "--dev", str(dev_file), "--budget", "150", "--optimizer", "cma",
              "--seed", "5", "--granularity", "layer"]
    reference = tmp_path / "reference"
    assert dfwe("search", *common, "--out", str(reference)).returncode == 0

    out = tmp_path / "killed"
    sigkill_mid_search(["search", *common, "--out", str(out)], out / "journal.sqlite", after_rows=20)
    before = journal_rows(out / "journal.sqlite")
    assert 20 <= len(before) < 150, "the search finished before it could be killed"
    assert not (out / "results.json").exists()

    resumed = dfwe("search", *common, "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    after = journal_rows(out / "journal.sqlite")
    assert len(after) == 150 + 1  # the budget, then the uniform soup
    assert after[: len(before)] == before  # journalled candidates were replayed, not scored again
    ours, theirs = (json.loads((d / "results.json").read_text())["search"] for d in (out, reference))
    assert ours["best_weights"] == theirs["best_weights"]
    assert [r[1] for r in after] == [r[1] for r in journal_rows(reference / "journal.sqlite")]


def test_budget_is_exact_and_results_carry_the_search_block(checkpoints, dev_file, tmp_path):
    done = dfwe("search", *map(str, checkpoints), "--dev", str(dev_file), "--budget", "17", "--optimizer", "cma",
                "--seed", "0", "--out", str(tmp_path / "s"))
    assert done.returncode == 0, done.stderr
    results = json.loads((tmp_path / "s" / "results.json").read_text())
    assert results["search"]["evaluations"] == 17 + 1 and results["search"]["optimizer"] == "cma"
    rows = journal_rows(tmp_path / "s" / "journal.sqlite")
    assert len(rows) == 17 + 1  # the budget, then the uniform soup of the three checkpoints
    soup_x = np.array(json.loads(rows[-1][1]))
    assert np.allclose(soup_x, soup_x[0])  # on the simplex (a softmax of x) equal values are the uniform weights
    objectives = [row[2] for row in rows]
    assert results["search"]["best_objective"] == min(objectives)
    assert results["search"]["kept"] == ("uniform-soup" if objectives[-1] < min(objectives[:-1]) else "search")
    weights = np.array(results["search"]["best_weights"])
    assert weights.shape == (1, 3) and np.isclose(weights.sum(), 1)
    assert (tmp_path / "s" / "merged" / "model.safetensors").is_file()


def test_ray_workers_reproduce_the_serial_journal(checkpoints, dev_file, tmp_path):
    common = [*map(str, checkpoints), "--dev", str(dev_file), "--budget", "12", "--optimizer", "cma", "--seed", "1",
              "--batch", "2"]
    serial = dfwe("search", *common, "--workers", "1", "--out", str(tmp_path / "serial"))
    parallel = dfwe("search", *common, "--workers", "2", "--out", str(tmp_path / "ray"))
    assert serial.returncode == 0, serial.stderr
    assert parallel.returncode == 0, parallel.stderr
    with sqlite3.connect(str(tmp_path / "ray" / "journal.sqlite")) as db:
        workers = {w for (w,) in db.execute("SELECT worker FROM candidates")}
    assert workers == {"ray-worker-0", "ray-worker-1"}
    a, b = journal_rows(tmp_path / "serial" / "journal.sqlite"), journal_rows(tmp_path / "ray" / "journal.sqlite")
    assert [r[1] for r in a] == [r[1] for r in b]  # identical asked points, in order
    np.testing.assert_allclose([r[2] for r in a], [r[2] for r in b], rtol=0, atol=1e-6)


def test_halving_reports_saved_full_evaluations(checkpoints, dev_file, tmp_path):
    done = dfwe("search", *map(str, checkpoints), "--dev", str(dev_file), "--budget", "19", "--optimizer", "random",
                "--halving", "--out", str(tmp_path / "h"))
    assert done.returncode == 0, done.stderr
    search = json.loads((tmp_path / "h" / "results.json").read_text())["search"]
    # the uniform soup, scored after the budget, is a full evaluation
    assert search["evaluations"] == 19 + 1 and search["full_evaluations"] == 7 + 1
    assert search["full_evaluations_saved"] == 12


@pytest.mark.parametrize("args,needle", [
    (["--optimizer", "adam"], "optimizer"),
    (["--space", "sphere"], "space"),
    (["--budget", "0"], "budget"),
])
def test_bad_search_settings_exit_2(checkpoints, dev_file, tmp_path, args, needle):
    done = dfwe("search", *map(str, checkpoints), "--dev", str(dev_file), "--out", str(tmp_path / "o"), *args)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1 and needle in done.stderr
    assert not (tmp_path / "o").exists()


def test_empty_dev_file_exits_2(checkpoints, tmp_path):
    empty = tmp_path / "dev.jsonl"
    empty.write_text("")
    done = dfwe("search", *map(str, checkpoints), "--dev", str(empty), "--out", str(tmp_path / "o"))
    assert done.returncode == 2 and "no examples" in done.stderr and str(empty) in done.stderr


def test_dev_label_unknown_to_the_checkpoints_exits_2(checkpoints, tmp_path):
    dev = write_task(tmp_path / "d", {"dev": friends_rows("dv", ["neg", "angry"], 2)}) / "dev.jsonl"
    done = dfwe("search", *map(str, checkpoints), "--dev", str(dev), "--out", str(tmp_path / "o"))
    assert done.returncode == 2 and "'angry'" in done.stderr


def test_corrupt_journal_is_reported_and_kept(checkpoints, dev_file, tmp_path):
    out = tmp_path / "o"
    assert dfwe("search", *map(str, checkpoints), "--dev", str(dev_file), "--budget", "4",
                "--out", str(out)).returncode == 0
    (out / "journal.sqlite").write_bytes(b"garbage" * 500)
    for suffix in ("-wal", "-shm"):
        (out / f"journal.sqlite{suffix}").unlink(missing_ok=True)
    done = dfwe("search", *map(str, checkpoints), "--dev", str(dev_file), "--budget", "4", "--out", str(out),
                "--resume")
    assert done.returncode == 2 and "corrupt" in done.stderr
    assert (out / "journal.sqlite").read_bytes() == b"garbage" * 500


def test_merge_with_wrong_number_of_weights_exits_2(checkpoints, tmp_path):
    done = dfwe("merge", *map(str, checkpoints), "--weights", "0.5", "0.5", "--out", str(tmp_path / "m"))
    assert done.returncode == 2 and "got 2 values for 3 checkpoints" in done.stderr
    assert not (tmp_path / "m").exists()


def test_fisher_space_measures_on_train_and_says_mergekit_only_approximates_it(checkpoints, dev_file, tmp_path):
    train = write_task(tmp_path / "train", {"train": friends_rows("tr", ["neg", "neu", "pos"], 10)}) / "train.jsonl"
    common = [*map(str, checkpoints), "--dev", str(dev_file), "--budget", "5", "--space", "fisher"]
    refused = dfwe("search", *common, "--out", str(tmp_path / "none"))
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1
    assert "--space fisher needs --train" in refused.stderr and not (tmp_path / "none").exists()
    merged = dfwe("merge", *map(str, checkpoints), "--weights", "0.5", "0.3", "0.2", "--method", "fisher",
                  "--out", str(tmp_path / "m"))
    assert merged.returncode == 2 and len(merged.stderr.strip().splitlines()) == 1 and "--space fisher" in merged.stderr

    done = dfwe("search", *common, "--train", str(train), "--out", str(tmp_path / "f"))
    assert done.returncode == 0, done.stderr
    results = json.loads((tmp_path / "f" / "results.json").read_text())
    kept = results["search"]["kept"]
    assert results["methods"]["dfwe"]["method"] == ("fisher" if kept == "search" else "linear")
    header = (tmp_path / "f" / "mergekit.yaml").read_text().splitlines()[0]
    assert header.startswith("# mergekit's nearest recipe" if kept == "search" else "# Reproduce this merge")
