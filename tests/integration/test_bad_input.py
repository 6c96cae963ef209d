"""Bad input exits 2 with one line naming the problem, and leaves an existing output directory unchanged."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import yaml
from conftest import friends_rows, perturbed_copies, write_task


def dfwe(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dfwe.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "DFWE_PROGRESS": "0"})


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def friends_suite(root: Path) -> Path:
    labels = ["a", "b", "c"]
    for name in ("target", "source"):
        write_task(root / name, {"train": friends_rows(f"{name}tr", labels, 12),
                                 "dev": friends_rows(f"{name}dv", labels, 2), "test": friends_rows(f"{name}te", labels, 2)})
    return root


def run_config(tmp_path: Path, data_dir: Path, base: Path, **search) -> Path:
    config = {"data": {"data_dir": str(data_dir), "target": "target", "sources": ["source"], "shots": 2},
              "model": {"base": str(base)}, "search": {"budget": 2, **search},
              "experts": {"train": {"epochs": 1}}, "target": {"train": {"epochs": 1}}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def assert_bad_input(done: subprocess.CompletedProcess, *needles: str) -> None:
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_missing_task_file(tmp_path, tiny_base, earlier_run):
    data = friends_suite(tmp_path / "data")
    (data / "target" / "dev.jsonl").unlink()
    before = snapshot(earlier_run)
    done = dfwe("run", str(run_config(tmp_path, data, tiny_base)), "--out", str(earlier_run), "--overwrite")
    assert_bad_input(done, "dev.jsonl", "missing")
    assert snapshot(earlier_run) == before


def test_unknown_label_in_test(tmp_path, tiny_base, earlier_run):
    data = friends_suite(tmp_path / "data")
    lines = (data / "target" / "test.jsonl").read_text().splitlines()
    lines[1] = lines[1].replace('"label": "a"', '"label": "zebra"')
    (data / "target" / "test.jsonl").write_text("\n".join(lines) + "\n")
    before = snapshot(earlier_run)
    done = dfwe("run", str(run_config(tmp_path, data, tiny_base)), "--out", str(earlier_run), "--overwrite")
    assert_bad_input(done, "test.jsonl", "'zebra'")
    assert snapshot(earlier_run) == before


def test_malformed_jsonl_line(tmp_path, tiny_base, earlier_run):
    data = friends_suite(tmp_path / "data")
    with (data / "source" / "train.jsonl").open("a") as handle:
        handle.write("{not json\n")
    before = snapshot(earlier_run)
    done = dfwe("run", str(run_config(tmp_path, data, tiny_base)), "--out", str(earlier_run), "--overwrite")
    assert_bad_input(done, "train.jsonl:37", "not valid JSON")
    assert snapshot(earlier_run) == before


def test_unknown_optimizer_in_config(tmp_path, tiny_base, earlier_run):
    data = friends_suite(tmp_path / "data")
    before = snapshot(earlier_run)
    done = dfwe("run", str(run_config(tmp_path, data, tiny_base, optimizer="adam")), "--out", str(earlier_run),
                "--overwrite")
    assert_bad_input(done, "search.optimizer", "'adam'")
    assert snapshot(earlier_run) == before


def test_unknown_optimizer_in_search_command(tmp_path, tiny_base, earlier_run):
    folders = perturbed_copies(tiny_base, tmp_path, 2)
    dev = write_task(tmp_path / "d", {"dev": friends_rows("dv", ["neg", "pos"], 2)}) / "dev.jsonl"
    before = snapshot(earlier_run)
    done = dfwe("search", *map(str, folders), "--dev", str(dev), "--budget", "3", "--optimizer", "sgd",
                "--out", str(earlier_run))
    assert_bad_input(done, "optimizer", "'sgd'")
    assert snapshot(earlier_run) == before


def latin1_on_line_3(path: Path) -> None:
    """Put a latin-1 byte (not UTF-8) into line 3 of ``path``."""
    lines = path.read_bytes().splitlines(keepends=True)
    lines[2] = lines[2].replace(b"Ross", b"Ren\xe9")
    path.write_bytes(b"".join(lines))


def test_task_file_that_is_not_utf8(tmp_path, tiny_base, earlier_run):
    data = friends_suite(tmp_path / "data")
    latin1_on_line_3(data / "target" / "dev.jsonl")
    before = snapshot(earlier_run)
    done = dfwe("run", str(run_config(tmp_path, data, tiny_base)), "--out", str(earlier_run), "--overwrite")
    assert_bad_input(done, f"{data / 'target' / 'dev.jsonl'}:3", "not UTF-8")
    assert snapshot(earlier_run) == before


def test_dev_file_that_is_not_utf8_in_search_command(tmp_path, tiny_base, earlier_run):
    folders = perturbed_copies(tiny_base, tmp_path, 2)
    dev = write_task(tmp_path / "d", {"dev": friends_rows("dv", ["neg", "pos"], 2)}) / "dev.jsonl"
    latin1_on_line_3(dev)
    before = snapshot(earlier_run)
    done = dfwe("search", *map(str, folders), "--dev", str(dev), "--budget", "3", "--out", str(earlier_run),
                "--overwrite")
    assert_bad_input(done, f"{dev}:3", "not UTF-8")
    assert snapshot(earlier_run) == before
