"""Reading user files and writing results so that nothing is ever half-written, lost or silently misread.

Reading: every text file a user gives (configs, ``task.json``, a model's ``dfwe.json`` and ``config.json``,
recipes) goes through :func:`read_text`, :func:`read_json` or :func:`read_yaml`: a missing file, bytes that are
not UTF-8 or a syntax error is bad input naming the file, line and column.

Writing: files and folders are written under a temporary name beside their destination and renamed into
place; a crash leaves either the old artefact or the new one, never a mix. Everything written gets the
user's umask, as ``open`` and ``mkdir`` would give it. An output directory must be creatable and writable
(:func:`check_output_dir`); one that already holds a run is only reused on ``--resume`` (same recipe) or
replaced on ``--overwrite``, and then only when the new run has succeeded (:func:`output_folder`).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import yaml

from dfwe.errors import BadInput

RUN_MARKER = "config.yaml"
# The section of a saved config that a resumed run may change: how it executes, not what it computes (dfwe.runtime).
RUNTIME_SECTION = "runtime"


def read_text(path: Path) -> str:
    """A UTF-8 text file; missing, unreadable or not UTF-8 is bad input naming the file (and line and column)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise BadInput(f"{path}: file not found") from None
    except OSError as error:
        raise BadInput(f"{path}: cannot read it ({error.strerror or error})") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        column = error.start - (raw.rfind(b"\n", 0, error.start) + 1) + 1
        raise BadInput(f"{path}:{line}:{column}: not UTF-8 (byte 0x{raw[error.start]:02x}); re-save the file as "
                       "UTF-8") from None


def read_json(path: Path) -> Any:
    """A JSON file (see :func:`read_text`); a syntax error is bad input naming file, line and column."""
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise BadInput(f"{path}:{error.lineno}:{error.colno}: not valid JSON ({error.msg})") from None


def read_yaml(path: Path) -> Any:
    """A YAML file (see :func:`read_text`); a syntax error is bad input naming file, line and column."""
    text = read_text(path)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise BadInput(f"{where}: not valid YAML ({problem})") from None


def _beside(path: Path, kind: str) -> Path:
    """A fresh name in ``path``'s folder for a temporary ``kind`` of it (hidden, unique to this process)."""
    return path.with_name(f".{path.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}")


@contextmanager
def atomic_dir(destination: Path) -> Iterator[Path]:
    """Yield a fresh folder beside ``destination``; when the block succeeds it replaces ``destination`` (renamed
    into place), when it fails in any way (an error, Ctrl-C) it is removed and ``destination`` is untouched."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    tmp = _beside(destination, "tmp")
    tmp.mkdir()  # mode 0o777 less the umask, as every folder the user makes
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = _beside(destination, "old")
    if destination.exists():
        destination.rename(old)
    tmp.rename(destination)
    shutil.rmtree(old, ignore_errors=True)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _beside(path, "tmp")
    try:
        # os.open applies the umask to 0o666, as open() does (mkstemp would make it 0o600)
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and an atomic rename."""
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def check_output_dir(out: Path) -> None:
    """Bad input unless ``out`` is, or can be created as, a writable directory; touches nothing on disk."""
    if out.exists() and not out.is_dir():
        raise BadInput(f"--out {out}: is a file, not a directory; choose another --out")
    for folder in (out, *out.parents):
        if folder.is_dir():  # the nearest folder that exists: the rest will be created inside it
            if not os.access(folder, os.R_OK | os.W_OK | os.X_OK):
                raise BadInput(f"--out {out}: {folder} is not writable; fix its permissions or choose another --out")
            return
        if folder.exists() or folder.is_symlink():
            raise BadInput(f"--out {out}: cannot create it, {folder} is a file, not a directory; "
                           "choose another --out")


def make_output_dir(out: Path) -> None:
    """Create ``out`` (and its parents) after :func:`check_output_dir`; any OS refusal is bad input naming it."""
    check_output_dir(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise BadInput(f"--out {out}: cannot create it ({error.strerror or error}); choose another --out") from None


def config_differences(saved: Any, config: Any, prefix: str = "") -> list[str]:
    """The dotted keys where two configs differ. A key one of them lacks counts as None, so a run saved before
    a setting existed resumes when the setting is left unset."""
    if isinstance(saved, dict) or isinstance(config, dict):
        saved, config = saved if isinstance(saved, dict) else {}, config if isinstance(config, dict) else {}
        return [key for name in sorted(set(saved) | set(config), key=str)
                for key in config_differences(saved.get(name), config.get(name), f"{prefix}{name}.")]
    return [] if saved == config else [prefix.rstrip(".") or "(config)"]


def _recipe(config: Any) -> Any:
    return {k: v for k, v in config.items() if k != RUNTIME_SECTION} if isinstance(config, dict) else config


def claim_output_dir(out: Path, config: dict[str, Any] | None, resume: bool, overwrite: bool) -> bool:
    """Check that a run with ``config`` may write ``out``, refusing to clobber an earlier run; deletes nothing.

    * empty or missing: the run starts there (``out`` is created);
    * holds a run and ``resume``: the saved config must equal ``config`` (its ``runtime`` section aside);
    * holds a run and ``overwrite``: returns True, the new run is to replace it (see :func:`output_folder`);
    * otherwise: bad input, and nothing is touched.

    Returns whether ``out`` holds results the run replaces. Unless it does, ``config`` is saved as
    ``config.yaml``, the marker ``resume`` looks for; ``None`` (an output that cannot be resumed, such as
    ``dfwe merge``'s) writes no marker.
    """
    check_output_dir(out)
    occupied = out.is_dir() and any(out.iterdir())
    if occupied and resume:
        marker = out / RUN_MARKER
        if not marker.is_file():
            raise BadInput(f"--out {out}: holds files but no {RUN_MARKER}, so there is no run to resume")
        saved = read_yaml(marker)
        differs = config_differences(_recipe(saved), _recipe(config))
        if differs:
            raise BadInput(f"--resume: {marker} was written with a different config (differs in {', '.join(differs)}); "
                           "resume with the same config, or use another --out")
    elif occupied and overwrite:
        return True
    elif occupied:
        raise BadInput(f"--out {out}: already holds results; pass --resume to continue that run, "
                       "--overwrite to replace it, or choose another directory")
    make_output_dir(out)
    if config is not None:
        atomic_write_text(out / RUN_MARKER, yaml.safe_dump(config, sort_keys=False))
    return False


@contextmanager
def output_folder(out: Path, config: dict[str, Any] | None, resume: bool = False,
                  overwrite: bool = False) -> Iterator[Path]:
    """The folder a run writes its results into, claimed as :func:`claim_output_dir` says.

    A new run, or a resumed one, writes into ``out`` itself (an interrupted run is continued with ``--resume``).
    A run that replaces earlier results (``overwrite``) writes into a fresh folder beside them, which takes their
    place only when the block succeeds: a failure at any point (bad input, an internal error, Ctrl-C) leaves
    the earlier results byte for byte as they were. An ``out`` that is a symlink keeps pointing where it did.
    """
    if not claim_output_dir(out, config, resume, overwrite):
        yield out
        return
    with atomic_dir(out.resolve()) as staging:
        if config is not None:
            atomic_write_text(staging / RUN_MARKER, yaml.safe_dump(config, sort_keys=False))
        yield staging
