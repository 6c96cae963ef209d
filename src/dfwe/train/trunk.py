"""The frozen trunk: with ``model.trainable_layers: N`` the embeddings and every encoder layer below the top N
stay the base's in every expert, ingredient and merge, so their output for an example is the same wherever it is
read. It is computed once, in eval mode, and kept in a content-addressed store on disk; training, selection,
probes, refits, the search and the scores then run only the top N layers on it.

The store holds one entry per *row* (an example, a window of a long context, one choice of a multiple-choice
example), keyed by the row's tokens and the trunk (the base's bytes, its depth, the storage dtype): an edited
example recomputes exactly its own rows, and every set that holds a row (a source read by seven targets, the
test split of every seed) shares its entry. Rows are computed one at a time, unpadded, so a row's states are
exactly the trunk's forward of that row alone, whichever set it came in. Entries live in chunk files read as memory maps, indexed
in SQLite.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from dfwe.cache import content_key
from dfwe.checkpoints import new_model
from dfwe.data.encode import EncodedSet, TrunkStates
from dfwe.data.prepare import PreparedData, TaskSplits
from dfwe.data.sets import ExampleSet
from dfwe.errors import BadInput
from dfwe.modeling import DfwePreTrainedModel, encoder_layers
from dfwe.progress import progress_bar
from dfwe.train.base import BaseModel

DTYPES = {"float16": np.float16, "float32": np.float32}
_INDEX = "index.sqlite"


def trunk_depth(trainable_layers: int | Literal["all"], base: BaseModel) -> int | None:
    """How many encoder layers the frozen trunk holds (None: ``all`` layers train, there is no trunk)."""
    if trainable_layers == "all":
        return None
    try:
        layers = len(encoder_layers(trunk_model(base).body))
    except ValueError as error:
        raise BadInput(f"model.trainable_layers: {error}; use model.trainable_layers: all") from None
    if trainable_layers > layers:
        raise BadInput(f"model.trainable_layers: {trainable_layers} is more than the base's {layers} encoder layers "
                       f"(use at most {layers}, or all)")
    return layers - trainable_layers


def row_keys(data: EncodedSet) -> np.ndarray:
    """The store's key of every row of ``data`` (a hash of its tokens and token types; "" where padded)."""
    lengths = data.lengths.numpy()
    keys = np.full(lengths.shape, "", dtype=object)
    for index in zip(*np.nonzero(lengths)):
        length = int(lengths[index])
        keys[index] = hashlib.sha256(data.input_ids[index][:length].numpy().tobytes()
                                     + data.token_type_ids[index][:length].numpy().tobytes()).hexdigest()
    return keys


class TrunkStore:
    """The content-addressed store of one trunk's row states (see the module's docstring)."""

    def __init__(self, folder: Path, key: str, model: DfwePreTrainedModel, depth: int, dtype: str):
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.key, self.model, self.depth = folder, key, model, depth
        self.dtype = DTYPES[dtype]
        self._db = sqlite3.connect(str(folder / _INDEX), isolation_level=None, timeout=600)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS rows (key TEXT PRIMARY KEY, chunk TEXT NOT NULL, "
                         "offset INTEGER NOT NULL, length INTEGER NOT NULL)")
        self._chunks: dict[str, np.ndarray] = {}

    def close(self) -> None:
        self._db.close()

    def states(self, data: EncodedSet, desc: str) -> TrunkStates:
        """The trunk's states of every row of ``data``, computing (and storing) the rows the store lacks."""
        lengths = data.lengths.numpy()
        keys = row_keys(data)
        wanted = sorted({key for key in keys.ravel() if key})
        found = self._lookup(wanted)
        missing = [index for index in zip(*np.nonzero(lengths)) if keys[index] not in found]
        if missing:
            found.update(self._compute(data, missing, keys, desc))
        names = sorted({chunk for chunk, _ in found.values()})
        position = {name: i for i, name in enumerate(names)}
        where = np.zeros((*lengths.shape, 2), dtype=np.int64)
        for index in zip(*np.nonzero(lengths)):
            chunk, offset = found[keys[index]]
            where[index] = (position[chunk], offset)
        return TrunkStates(tuple(self._chunk(name) for name in names), where, self.depth, self.key)

    def _lookup(self, keys: list[str]) -> dict[str, tuple[str, int]]:
        found: dict[str, tuple[str, int]] = {}
        for start in range(0, len(keys), 500):  # SQLite's limit on bound parameters
            part = keys[start:start + 500]
            rows = self._db.execute(f"SELECT key, chunk, offset FROM rows WHERE key IN ({','.join('?' * len(part))})",
                                    part).fetchall()
            found.update({key: (chunk, offset) for key, chunk, offset in rows})
        return found

    def _chunk(self, name: str) -> np.ndarray:
        if name not in self._chunks:
            self._chunks[name] = np.load(self.folder / name, mmap_mode="r")
        return self._chunks[name]

    @torch.no_grad()
    def _compute(self, data: EncodedSet, missing: list[tuple], keys: np.ndarray, desc: str) -> dict[str, tuple[str, int]]:
        """The trunk run over ``missing`` rows (each key once), written to one new chunk, then indexed."""
        unique: dict[str, tuple] = {}
        for index in missing:
            unique.setdefault(keys[index], index)
        rows = sorted(unique.values(), key=lambda index: int(data.lengths[index]))
        lengths = [int(data.lengths[index]) for index in rows]
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        name = f"chunk-{os.getpid()}-{secrets.token_hex(6)}.npy"
        hidden = self.model.config.encoder_config.hidden_size
        tmp = self.folder / f".{name}.tmp"
        pool = np.lib.format.open_memmap(tmp, mode="w+", dtype=self.dtype, shape=(int(sum(lengths)), hidden))
        device = next(self.model.parameters()).device
        self.model.eval()
        bar = progress_bar(len(rows), f"trunk {desc}")
        for row, offset, width in zip(rows, offsets, lengths):
            # one row at a time, unpadded: its states are then its own, whatever set or batch it came in
            ids = data.input_ids[row][:width].to(device)[None]
            types = data.token_type_ids[row][:width].to(device)[None]
            states = self.model.trunk_states(ids, torch.ones_like(ids), types, self.depth)
            pool[offset:offset + width] = states[0].float().cpu().numpy()
            bar.update(1)
        bar.close()
        pool.flush()
        del pool
        os.replace(tmp, self.folder / name)
        entries = [(keys[index], name, int(offset), length) for index, offset, length in zip(rows, offsets, lengths)]
        self._db.execute("BEGIN")
        self._db.executemany("INSERT OR IGNORE INTO rows VALUES (?, ?, ?, ?)", entries)
        self._db.execute("COMMIT")
        return {key: (chunk, offset) for key, chunk, offset, _ in entries}


def trunk_model(base: BaseModel) -> DfwePreTrainedModel:
    """The base's encoder in a dfwe model (its head is never read; torch's random state is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        return new_model(base.folder, "classification", ("a", "b"), base.pooling)


def _with_states(data: ExampleSet, store: TrunkStore, desc: str) -> ExampleSet:
    return replace(data, encoded=replace(data.encoded, states=store.states(data.encoded, desc)))


def attach_trunk(data: PreparedData, base: BaseModel, depth: int, dtype: str, cache_dir: Path,
                 device: torch.device) -> PreparedData:
    """``data`` with the frozen trunk's states of every set the run reads (sources, target train / dev / held-out /
    validation), from the store of this base, depth and dtype under ``cache_dir``."""
    key = content_key("trunk", base=base.digest, depth=depth, dtype=dtype)
    model = trunk_model(base).to(device)
    store = TrunkStore(cache_dir / f"trunk-{key}", key, model, depth, dtype)
    try:
        sources = {name: TaskSplits(_with_states(s.train, store, f"{name} train"),
                                    _with_states(s.dev, store, f"{name} dev"), s.prep)
                   for name, s in data.sources.items()}
        target = data.target.name
        return replace(data, sources=sources, train=_with_states(data.train, store, f"{target} train"),
                       dev=_with_states(data.dev, store, f"{target} dev"),
                       test=_with_states(data.test, store, f"{target} held-out"),
                       validation=(_with_states(data.validation, store, f"{target} validation")
                                   if data.validation is not None else None))
    finally:
        store.close()
