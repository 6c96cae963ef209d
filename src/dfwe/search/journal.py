"""The search journal: every scored candidate, committed to SQLite the moment it is scored.

A journal also records what search wrote it (a fingerprint of the settings that determine the asked
points); resuming with other settings is refused instead of silently mixing two searches.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dfwe.errors import BadInput

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS candidates (
    idx INTEGER PRIMARY KEY,
    x TEXT NOT NULL,
    weights TEXT NOT NULL,
    objective REAL NOT NULL,
    metrics TEXT NOT NULL,
    fidelity REAL NOT NULL,
    seconds REAL NOT NULL,
    worker TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class Record:
    """One scored candidate."""

    idx: int
    x: np.ndarray
    weights: np.ndarray
    objective: float
    metrics: dict[str, float]
    fidelity: float
    seconds: float
    worker: str


class Journal:
    """An append-only SQLite journal of scored candidates."""

    def __init__(self, path: Path, fingerprint: dict[str, Any]):
        self.path = path
        existed = path.exists()
        try:
            self._db = sqlite3.connect(str(path), isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            stored = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
            self._db.execute("SELECT count(*) FROM candidates").fetchone()
        except sqlite3.DatabaseError as error:
            raise BadInput(f"{path}: corrupt or not a dfwe journal ({error}); move it away to start a new search") from None
        wanted = json.dumps(fingerprint, sort_keys=True)
        if "fingerprint" not in stored:
            if existed and self._count() > 0:
                raise BadInput(f"{path}: journal has candidates but no fingerprint; move it away to start a new search")
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('fingerprint', ?)", (wanted,))
        elif stored["fingerprint"] != wanted:
            theirs = json.loads(stored["fingerprint"])
            differs = sorted(k for k in set(theirs) | set(fingerprint) if theirs.get(k) != fingerprint.get(k))
            raise BadInput(f"{path}: journal was written by a different search (differs in {', '.join(differs)}); "
                           "use the same settings to resume, or another --out")

    def _count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM candidates").fetchone()[0])

    def records(self) -> list[Record]:
        """All journalled candidates in order."""
        rows = self._db.execute("SELECT idx, x, weights, objective, metrics, fidelity, seconds, worker "
                                "FROM candidates ORDER BY idx").fetchall()
        try:
            return [Record(idx, np.array(json.loads(x)), np.array(json.loads(w)), objective, json.loads(metrics),
                           fidelity, seconds, worker)
                    for idx, x, w, objective, metrics, fidelity, seconds, worker in rows]
        except (json.JSONDecodeError, TypeError) as error:
            raise BadInput(f"{self.path}: corrupt journal row ({error}); move it away to start a new search") from None

    def append(self, record: Record) -> None:
        """Commit one scored candidate (durable before this returns)."""
        self._db.execute(
            "INSERT INTO candidates VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (record.idx, json.dumps(record.x.tolist()), json.dumps(record.weights.tolist()), float(record.objective),
             json.dumps(record.metrics), record.fidelity, record.seconds, record.worker))

    def close(self) -> None:
        self._db.close()
