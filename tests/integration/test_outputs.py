"""Output directories: an occupied ``--out`` is refused unless ``--overwrite`` (or ``--resume``), an ``--out``
that cannot be created is bad input naming it, and refused commands leave earlier results byte for byte."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from conftest import friends_rows, perturbed_copies, write_task

from dfwe import cli
from dfwe.errors import BadInput
from dfwe.io import check_output_dir, claim_output_dir, make_output_dir

DEMO_CONFIG = Path(cli.__file__).parent / "configs" / "demo.yaml"


def dfwe(*args: str, code: str | None = None) -> subprocess.CompletedProcess:
    """The real command in a fresh interpreter (``code`` replaces ``-m dfwe.cli`` when given)."""
    command = ["-c", code, *args] if code else ["-m", "dfwe.cli", *args]
    return subprocess.run([sys.executable, *command], capture_output=True, text=True,
                          env={**os.environ, "DFWE_PROGRESS": "0"})


def main(capsys, monkeypatch, *args: str) -> tuple[int, str]:
    """``dfwe ARGS`` in this process (quick: no re-import); returns the exit code and stderr."""
    monkeypatch.setattr(cli, "_quiet_third_party", lambda: None)  # keep this process's logging as it is
    from transformers.utils import logging as hf_logging

    monkeypatch.setattr(hf_logging, "_tqdm_active", False)  # but no loading bars on stderr (restored after)
    code = cli.main(list(args))
    return code, capsys.readouterr().err


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_one_line(err: str, *needles: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture
def earlier(earlier_run) -> Path:
    """An output folder holding an earlier command's results."""
    return earlier_run


@pytest.fixture
def checkpoints(tiny_base, tmp_path) -> list[Path]:
    return perturbed_copies(tiny_base, tmp_path, 2)


@pytest.fixture
def dev_file(tmp_path) -> Path:
    return write_task(tmp_path / "dev", {"dev": friends_rows("dv", ["neg", "neu", "pos"], 4)}) / "dev.jsonl"


# ---- 1. an occupied --out is refused unless --overwrite

def test_merge_refuses_an_occupied_out_and_changes_nothing(checkpoints, earlier, capsys, monkeypatch):
    before = snapshot(earlier)
    code, err = main(capsys, monkeypatch, "merge", *map(str, checkpoints), "--weights", "0.5", "0.5",
                     "--out", str(earlier))
    assert code == 2
    assert_one_line(err, str(earlier), "already holds results", "--overwrite")
    assert snapshot(earlier) == before


def test_merge_overwrite_replaces_the_earlier_results(checkpoints, earlier, capsys, monkeypatch):
    code, err = main(capsys, monkeypatch, "merge", *map(str, checkpoints), "--weights", "0.5", "0.5",
                     "--out", str(earlier), "--overwrite")
    assert code == 0, err
    assert not (earlier / "results.json").exists() and not (earlier / "config.yaml").exists()
    assert (earlier / "model.safetensors").stat().st_size > 1000 and (earlier / "mergekit.yaml").is_file()
    assert json.loads((earlier / "dfwe.json").read_text())["weights"] == [[0.5, 0.5]]


def test_merge_into_an_empty_existing_folder_needs_no_flag(checkpoints, tmp_path, capsys, monkeypatch):
    (tmp_path / "empty").mkdir()
    code, err = main(capsys, monkeypatch, "merge", *map(str, checkpoints), "--weights", "1", "0",
                     "--out", str(tmp_path / "empty"))
    assert code == 0, err
    assert (tmp_path / "empty" / "model.safetensors").is_file()
    assert not (tmp_path / "empty" / "config.yaml").exists()  # merge writes no run marker into the model folder


def test_merge_bad_weights_with_overwrite_keep_the_earlier_results(checkpoints, earlier, capsys, monkeypatch):
    before = snapshot(earlier)
    code, err = main(capsys, monkeypatch, "merge", *map(str, checkpoints), "--weights", "0.5",
                     "0.2", "0.3", "--out", str(earlier), "--overwrite")
    assert code == 2
    assert_one_line(err, "--weights")
    assert snapshot(earlier) == before


def test_search_refuses_an_occupied_out_and_changes_nothing(checkpoints, dev_file, earlier, capsys, monkeypatch):
    before = snapshot(earlier)
    code, err = main(capsys, monkeypatch, "search", *map(str, checkpoints), "--dev", str(dev_file),
                     "--budget", "3", "--out", str(earlier))
    assert code == 2
    assert_one_line(err, str(earlier), "already holds results", "--overwrite", "--resume")
    assert snapshot(earlier) == before


def test_search_overwrite_replaces_the_earlier_results(checkpoints, dev_file, earlier, capsys, monkeypatch):
    code, err = main(capsys, monkeypatch, "search", *map(str, checkpoints), "--dev", str(dev_file),
                     "--budget", "3", "--out", str(earlier), "--overwrite")
    assert code == 0, err
    results = json.loads((earlier / "results.json").read_text())
    assert results["search"]["evaluations"] == 3 + 1  # the budget, then the uniform soup
    assert (earlier / "journal.sqlite").is_file() and (earlier / "merged" / "dfwe.json").is_file()
    assert (earlier / "merged" / "model.safetensors").stat().st_size > 1000  # the new model, not the old bytes


def test_search_with_workers_but_no_ray_is_refused_before_out_is_touched(checkpoints, dev_file, earlier):
    before = snapshot(earlier)
    no_ray = "import sys; sys.modules['ray'] = None; from dfwe.cli import main; raise SystemExit(main(sys.argv[1:]))"
    done = dfwe("search", *map(str, checkpoints), "--dev", str(dev_file), "--budget", "4", "--workers", "2",
                "--out", str(earlier), "--overwrite", code=no_ray)
    assert done.returncode == 2, done.stderr
    assert_one_line(done.stderr, "--workers 2", "Ray", "dfwe[ray]")
    assert snapshot(earlier) == before


# ---- 2. an --out that cannot be created or written is bad input naming it

def _blocked(tmp_path: Path, shape: str) -> tuple[Path, Path]:
    """(--out, the regular file in its way): the path is the file, or a file sits where a parent should be."""
    blocker = tmp_path / "taken"
    blocker.write_text("not a folder\n")
    return (blocker if shape == "is-a-file" else blocker / "sub" / "out"), blocker


def _command(name: str, out: Path, checkpoints: list[Path], dev_file: Path, tmp_path: Path) -> list[str]:
    return {"demo": ["demo"],
            "run": ["run", str(DEMO_CONFIG)],
            "bench": ["bench", "--data-dir", str(tmp_path), "--seeds", "0"],
            "merge": ["merge", *map(str, checkpoints), "--weights", "0.5", "0.5"],
            "search": ["search", *map(str, checkpoints), "--dev", str(dev_file), "--budget", "2"]}[name] + [
        "--out", str(out)]


@pytest.mark.parametrize("shape", ["is-a-file", "file-in-parents"])
@pytest.mark.parametrize("name", ["demo", "run", "bench", "merge", "search"])
def test_out_that_cannot_be_created_is_bad_input(name, shape, checkpoints, dev_file, tmp_path, capsys, monkeypatch):
    out, blocker = _blocked(tmp_path, shape)
    code, err = main(capsys, monkeypatch, *_command(name, out, checkpoints, dev_file, tmp_path))
    assert code == 2
    assert_one_line(err, f"--out {out}", str(blocker), "not a directory")
    assert blocker.read_text() == "not a folder\n"


def test_out_under_a_file_end_to_end_exits_2_without_traceback(tmp_path):
    out, blocker = _blocked(tmp_path, "file-in-parents")
    done = dfwe("demo", "--out", str(out))
    assert done.returncode == 2
    assert_one_line(done.stderr, str(out), str(blocker))


def test_library_entry_points_refuse_an_uncreatable_out(checkpoints, tmp_path):
    from dfwe.commands.merge import merge_checkpoints

    out, blocker = _blocked(tmp_path, "file-in-parents")
    with pytest.raises(BadInput, match="taken"):
        merge_checkpoints(checkpoints, [0.5, 0.5], out)
    with pytest.raises(BadInput, match="is a file"):
        claim_output_dir(blocker, {"seed": 0}, resume=False, overwrite=True)
    assert blocker.read_text() == "not a folder\n"


def test_os_refusal_to_create_out_is_one_line_naming_it(tmp_path, monkeypatch):
    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(BadInput) as caught:
        make_output_dir(tmp_path / "new")
    message = str(caught.value)
    assert "\n" not in message and str(tmp_path / "new") in message and "Permission denied" in message


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root may write anywhere")
def test_read_only_parent_is_bad_input(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(BadInput, match="not writable"):
            check_output_dir(locked / "out")
    finally:
        locked.chmod(0o700)


# ---- 4. --version

def test_version_prints_the_installed_version():
    done = dfwe("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"dfwe {version('dfwe')}\n"


def test_version_falls_back_to_the_package_attribute(monkeypatch):
    import importlib.metadata

    import dfwe as package

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    assert cli._version() == package.__version__
