"""Writing results so that nothing is ever half-written or lost.

Files and folders are written under a temporary name beside their destination and renamed into place;
a crash leaves either the old artefact or the new one, never a mix. An output directory that already
holds a run is only reused on ``--resume`` (same config) or replaced on ``--overwrite``.
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


def claim_output_dir(out: Path, config: dict[str, Any], resume: bool, overwrite: bool) -> None:
    """Make ``out`` ready for a run with ``config``, refusing to clobber an earlier run.

    * empty or missing: the run starts there;
    * holds a run and ``resume``: the saved config must equal ``config``;
    * holds a run and ``overwrite``: the earlier run is deleted;
    * otherwise: bad input, and nothing is touched.
    """
    if out.exists() and not out.is_dir():
        raise BadInput(f"--out {out}: exists and is not a directory")
    occupied = out.is_dir() and any(out.iterdir())
    if occupied and resume:
        marker = out / RUN_MARKER
        if not marker.is_file():
            raise BadInput(f"--out {out}: holds files but no {RUN_MARKER}, so there is no run to resume")
        saved = yaml.safe_load(marker.read_text())
        if saved != config:
            differs = sorted(k for k in set(saved or {}) | set(config) if (saved or {}).get(k) != config.get(k))
            raise BadInput(f"--resume: {marker} was written with a different config (differs in {', '.join(differs)}); "
                           "resume with the same config, or use another --out")
    elif occupied and overwrite:
        for child in out.iterdir():
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    elif occupied:
        raise BadInput(f"--out {out}: already holds results; pass --resume to continue that run, "
                       "--overwrite to replace it, or choose another directory")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / RUN_MARKER, yaml.safe_dump(config, sort_keys=False))
