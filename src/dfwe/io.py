"""Writing results so that nothing is ever half-written or lost.

Files and folders are written under a temporary name beside their destination and renamed into place;
a crash leaves either the old artefact or the new one, never a mix. An output directory must be creatable
and writable (:func:`check_output_dir`); one that already holds a run is only reused on ``--resume`` (same
config) or replaced on ``--overwrite``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import yaml

from dfwe.errors import BadInput

RUN_MARKER = "config.yaml"
# The section of a saved config that a resumed run may change: how it executes, not what it computes (dfwe.runtime).
RUNTIME_SECTION = "runtime"


@contextmanager
def atomic_dir(destination: Path) -> Iterator[Path]:
    """Yield a fresh temporary folder; on success it replaces ``destination`` in one rename."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{destination.name}.tmp-", dir=destination.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = destination.with_name(f".{destination.name}.old-{os.getpid()}")
    if destination.exists():
        destination.rename(old)
    tmp.rename(destination)
    shutil.rmtree(old, ignore_errors=True)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    with os.fdopen(handle, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


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


def claim_output_dir(out: Path, config: dict[str, Any] | None, resume: bool, overwrite: bool) -> None:
    """Make ``out`` ready for a run with ``config``, refusing to clobber an earlier run.

    * empty or missing: the run starts there;
    * holds a run and ``resume``: the saved config must equal ``config`` (its ``runtime`` section aside);
    * holds a run and ``overwrite``: the earlier run is deleted;
    * otherwise: bad input, and nothing is touched.

    ``config`` is saved as ``config.yaml``, the marker ``resume`` looks for; ``None`` (an output that cannot
    be resumed, such as ``dfwe merge``'s) writes no marker.
    """
    check_output_dir(out)
    occupied = out.is_dir() and any(out.iterdir())
    if occupied and resume:
        marker = out / RUN_MARKER
        if not marker.is_file():
            raise BadInput(f"--out {out}: holds files but no {RUN_MARKER}, so there is no run to resume")
        saved = yaml.safe_load(marker.read_text())
        differs = config_differences(_recipe(saved), _recipe(config))
        if differs:
            raise BadInput(f"--resume: {marker} was written with a different config (differs in {', '.join(differs)}); "
                           "resume with the same config, or use another --out")
    elif occupied and overwrite:
        for child in out.iterdir():
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    elif occupied:
        raise BadInput(f"--out {out}: already holds results; pass --resume to continue that run, "
                       "--overwrite to replace it, or choose another directory")
    make_output_dir(out)
    if config is not None:
        atomic_write_text(out / RUN_MARKER, yaml.safe_dump(config, sort_keys=False))
