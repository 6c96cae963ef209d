"""The weight space: N checkpoints held once as one stacked ``[rows, parameters]`` tensor.

A candidate merge is a matrix of coefficients ``[groups, rows]``; :meth:`WeightSpace.merge` writes
``sum_r c[g, r] * theta_r`` for every parameter of group ``g`` straight into a flat buffer whose slices
*are* the live model's parameters, so scoring a candidate rebuilds and reloads nothing. Each merge is
one matrix-vector product per contiguous run of same-group parameters, reading the stacked storage once
and writing the live buffer once: the memory traffic floor of ``(rows + 1) x parameters`` values.
"""

from __future__ import annotations

import ctypes
import json
import mmap
import re
import struct
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from safetensors import safe_open

from dfwe.checkpoints import weight_files
from dfwe.errors import BadInput
from dfwe.merge.fisher import check_fisher_weights, fisher_merge, fisher_rows
from dfwe.merge.groups import Grouping, make_grouping
from dfwe.merge.methods import coefficients, get_method, sparsified_rows
from dfwe.modeling import in_trunk

_CHUNK = 1 << 22  # values per row converted at a time when storage is bfloat16


@dataclass(frozen=True)
class TensorSlot:
    """Where one named tensor lives in the flat layout."""

    name: str
    shape: tuple[int, ...]
    offset: int

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def _file_header(file: Path) -> tuple[dict, int]:
    """A safetensors file's JSON header and the byte offset where its data starts."""
    with file.open("rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise BadInput(f"{file}: not a safetensors file (too short)")
        length = struct.unpack("<Q", prefix)[0]
        try:
            header = json.loads(handle.read(length))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise BadInput(f"{file}: not a safetensors file (unreadable header)") from None
    header.pop("__metadata__", None)
    return header, 8 + length


def read_header(path: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """``name -> (shape, dtype)`` for the floating-point tensors of a checkpoint, without reading them."""
    out = {}
    for file in weight_files(path):
        header, _ = _file_header(file)
        out.update({name: (tuple(info["shape"]), info["dtype"]) for name, info in header.items()
                    if info["dtype"] in _DTYPES})
    return out


READ_SLICE_BYTES = 16 * 2**20  # how much of a checkpoint is mapped in at once while reading


def read_into(file: Path, destinations: Mapping[str, torch.Tensor]) -> None:
    """Copy tensors of a safetensors file into ``destinations`` (flat views), through a memory map.

    Tensors are viewed in place in the map a slice at a time, copied (and converted) straight into their
    destination, and the slice's pages are then released, so reading adds only a few MiB to the resident set.
    """
    header, start = _file_header(file)
    page = mmap.PAGESIZE
    with file.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        for name, destination in destinations.items():
            if name not in header:
                continue
            info = header[name]
            begin, end = (start + offset for offset in info["data_offsets"])
            dtype = _DTYPES[info["dtype"]]
            per_slice = max(1, READ_SLICE_BYTES // dtype.itemsize)
            for first in range(0, (end - begin) // dtype.itemsize, per_slice):
                offset = begin + first * dtype.itemsize
                count = min(per_slice, (end - offset) // dtype.itemsize)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # torch warns that a read-only map is not writable; it is only read
                    source = torch.frombuffer(mapped, dtype=dtype, count=count, offset=offset)
                if not torch.isfinite(source).all():
                    raise BadInput(f"tensor '{name}' in {file.parent if file.name == 'model.safetensors' else file} "
                                   "holds NaN or Inf values")
                destination[first : first + count].copy_(source)
                del source
                aligned = offset - offset % page
                mapped.madvise(mmap.MADV_DONTNEED, aligned, offset + count * dtype.itemsize - aligned)


def check_compatible(paths: Sequence[Path]) -> dict[str, tuple[tuple[int, ...], str]]:
    """Check that every checkpoint has the same tensor names, shapes and dtypes; return the first header."""
    reference = read_header(paths[0])
    for path in paths[1:]:
        header = read_header(path)
        for name in reference.keys() | header.keys():
            if name not in header:
                raise BadInput(f"tensor '{name}' is in {paths[0]} but missing from {path}")
            if name not in reference:
                raise BadInput(f"tensor '{name}' is in {path} but missing from {paths[0]}")
            if header[name][0] != reference[name][0]:
                raise BadInput(f"tensor '{name}' has shape {list(reference[name][0])} in {paths[0]} "
                               f"but {list(header[name][0])} in {path}")
            if header[name][1] != reference[name][1]:
                raise BadInput(f"tensor '{name}' has dtype {reference[name][1]} in {paths[0]} "
                               f"but {header[name][1]} in {path}")
    return reference


def check_equal(paths: Sequence[Path], names: Sequence[str], depth: int | None) -> None:
    """Bad input naming the tensor unless every one of ``names`` has the same bytes in every checkpoint."""
    if not names:
        return
    reference: dict[str, torch.Tensor] = {}
    for path in paths:
        for file in weight_files(path):
            with safe_open(str(file), framework="pt") as handle:
                for name in set(names) & set(handle.keys()):
                    tensor = handle.get_tensor(name)
                    if name not in reference:
                        reference[name] = tensor
                    elif not torch.equal(tensor, reference[name]):
                        raise BadInput(f"tensor '{name}' differs between {paths[0]} and {path}, but it belongs to the "
                                       f"frozen trunk (the embeddings and the first {depth} encoder layers, the base's "
                                       "in every ingredient); merge checkpoints trained with the same "
                                       "model.trainable_layers, or search with all layers")


class WeightSpace:
    """Stacked checkpoints plus a live flat buffer that a model's parameters point into.

    Rows are the ingredients in order, then (optionally) a ``base`` row, the common starting point that
    task arithmetic measures task vectors from. With ``deltas`` the ingredient rows hold task vectors
    (LoRA products, TIES/DARE-sparsified differences) rather than whole weights, and a merge is
    ``base + sum_i w_i * row_i``. Once :meth:`set_fisher` has given it each ingredient's Fisher, the space also
    merges by ``fisher`` (:mod:`dfwe.merge.fisher`).
    """

    def __init__(self, slots: Sequence[TensorSlot], stacked: torch.Tensor, ingredients: Sequence[str],
                 has_base: bool = False, deltas: bool = False, frozen: Sequence[str] = ()):
        if deltas and not has_base:
            raise ValueError("a space of task-vector rows needs a base row")
        self.slots = tuple(slots)
        # tensors of the checkpoints the space does not hold: a frozen trunk's, equal in every checkpoint
        self.frozen = tuple(frozen)
        self.stacked = stacked
        self.ingredients = tuple(ingredients)
        self.has_base = has_base
        self.deltas = deltas
        # Left unwritten until bind() or merge() fills it: untouched pages cost no memory, so binding a model
        # (copy a tensor in, free the model's own copy) never holds two whole models at once.
        self.live = torch.empty(stacked.shape[1], dtype=torch.float32, device=stacked.device)
        self._convert = (torch.empty((stacked.shape[0], min(_CHUNK, stacked.shape[1])), dtype=torch.float32,
                                     device=stacked.device) if stacked.dtype != torch.float32 else None)
        self.fisher: torch.Tensor | None = None  # [ingredients, parameters] as fisher_rows scales them
        self.fisher_weighted: torch.Tensor | None = None  # fisher * the ingredient rows
        self.set_grouping("model")

    # ----------------------------------------------------------------------------------------- building
    @classmethod
    def from_checkpoints(cls, paths: Sequence[Path], base: Path | None = None, device: str | torch.device = "cpu",
                         storage_dtype: torch.dtype = torch.float32, trunk_depth: int | None = None) -> "WeightSpace":
        """Stack checkpoints, read memory-mapped tensor by tensor, after checking they are compatible.

        With ``trunk_depth`` the space holds only what trains above a frozen trunk of that many encoder layers
        (see :func:`dfwe.modeling.in_trunk`); the trunk's tensors are checked equal, bit for bit, in every
        checkpoint instead.
        """
        if len(paths) < 1:
            raise BadInput("give at least one checkpoint")
        all_paths = [*paths, *([base] if base is not None else [])]
        header = check_compatible(all_paths)
        frozen = sorted((n for n in header if in_trunk(n, trunk_depth)), key=_natural_key)
        check_equal(all_paths, frozen, trunk_depth)
        held = sorted(set(header) - set(frozen), key=_natural_key)
        slots = tensor_layout([(n, header[n][0]) for n in held])
        stacked = torch.empty((len(all_paths), slots[-1].offset + slots[-1].numel), dtype=storage_dtype,
                              device=device)
        staging = stacked if stacked.device.type == "cpu" else None
        for r, path in enumerate(all_paths):
            row = stacked[r] if staging is not None else torch.empty(stacked.shape[1], dtype=storage_dtype)
            views = {slot.name: row[slot.offset : slot.offset + slot.numel] for slot in slots}
            for file in weight_files(path):
                read_into(file, views)
            if staging is None:
                stacked[r].copy_(row)
        return cls(slots, stacked, [str(p) for p in paths], has_base=base is not None, frozen=frozen)

    # ---------------------------------------------------------------------------------------- structure
    @property
    def num_ingredients(self) -> int:
        return len(self.ingredients)

    @property
    def names(self) -> list[str]:
        return [slot.name for slot in self.slots]

    def set_grouping(self, granularity: str, block_size: int = 1) -> Grouping:
        """Choose which parameters share a weight; merges then take ``[grouping.size, rows]`` coefficients."""
        self.grouping = make_grouping(self.names, granularity, block_size)
        runs: list[tuple[int, int, int]] = []  # (group, start, end) over maximal same-group stretches
        for slot, group in zip(self.slots, self.grouping.index):
            end = slot.offset + slot.numel
            if runs and runs[-1][0] == group and runs[-1][2] == slot.offset:
                runs[-1] = (group, runs[-1][1], end)
            else:
                runs.append((group, slot.offset, end))
        self._runs = tuple(runs)
        return self.grouping

    def sparsify_(self, method: str, density: float, seed: int = 0) -> "WeightSpace":
        """Turn ingredient rows into TIES or DARE task-vector rows (peft semantics), in place."""
        if not self.has_base or self.deltas:
            raise BadInput(f"{method} needs whole checkpoints and a base checkpoint (--base)")
        n = self.num_ingredients
        for index, slot in enumerate(self.slots):
            rows = self.stacked[:, slot.offset : slot.offset + slot.numel].float()
            vectors = (rows[:n] - rows[n]).view(n, *slot.shape)
            self.stacked[:n, slot.offset : slot.offset + slot.numel] = (
                sparsified_rows(vectors, method, density, seed + index).reshape(n, -1).to(self.stacked.dtype))
        self.deltas = True
        self.fisher = self.fisher_weighted = None  # a Fisher weighs whole checkpoints, not these rows
        return self

    def set_fisher(self, fisher: torch.Tensor) -> WeightSpace:
        """Hold every ingredient's raw diagonal Fisher (``[ingredients, parameters]``, e.g. from
        :func:`dfwe.merge.fold.ingredient_fishers`) so that :meth:`apply` can merge by ``fisher``."""
        if self.deltas:
            raise BadInput("fisher merging weighs whole checkpoints, not task-vector rows (LoRA, TIES, DARE)")
        expected = (self.num_ingredients, self.stacked.shape[1])
        if tuple(fisher.shape) != expected:
            raise ValueError(f"a Fisher of shape {list(fisher.shape)} for a space of {list(expected)}")
        self.fisher = fisher_rows(fisher.to(self.stacked.device, torch.float32))
        self.fisher_weighted = self.fisher * self.stacked[: self.num_ingredients].float()
        return self

    # ------------------------------------------------------------------------------------------ merging
    def bind(self, model: torch.nn.Module) -> None:
        """Make every parameter of ``model`` that the space holds a view into the live buffer."""
        params = dict(model.named_parameters())
        missing = [slot.name for slot in self.slots if slot.name not in params]
        if missing:
            raise BadInput(f"model has no parameter '{missing[0]}' that the checkpoints hold")
        for slot in self.slots:
            param = params[slot.name]
            if tuple(param.shape) != slot.shape:
                raise BadInput(f"model parameter '{slot.name}' has shape {list(param.shape)}, "
                               f"checkpoints hold {list(slot.shape)}")
            view = self.live[slot.offset : slot.offset + slot.numel].view(slot.shape)
            view.copy_(param.detach())
            param.data = view
            _return_freed_memory()  # tensor by tensor, so the old and the new copy never both exist whole

    def merge(self, coefficients: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Write the merge ``coefficients`` (``[groups, rows]`` or ``[rows]``) into the live buffer."""
        coefficients = self._per_group(coefficients, self.stacked.shape[0])
        for group, start, end in self._runs:
            row = coefficients[group : group + 1]
            if self._convert is None:
                torch.matmul(row, self.stacked[:, start:end], out=self.live[start:end].view(1, -1))
                continue
            for chunk in range(start, end, self._convert.shape[1]):
                stop = min(chunk + self._convert.shape[1], end)
                buffer = self._convert[:, : stop - chunk]
                buffer.copy_(self.stacked[:, chunk:stop])
                torch.matmul(row, buffer, out=self.live[chunk:stop].view(1, -1))
        return self.live

    def merge_fisher(self, weights: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Write the Fisher-weighted merge at ``weights`` (``[groups, ingredients]`` or ``[ingredients]``) into the
        live buffer: ``sum_i w_i F_i theta_i / sum_i w_i F_i`` per parameter (:mod:`dfwe.merge.fisher`)."""
        if self.fisher is None or self.fisher_weighted is None:
            raise BadInput("fisher merging needs each ingredient's Fisher on its train set: search the 'fisher' "
                           "space in a run (or give dfwe search --train), which measures it")
        weights = self._per_group(weights, self.num_ingredients)
        check_fisher_weights(weights)
        for group, start, end in self._runs:
            self.live[start:end] = fisher_merge(weights[group : group + 1], self.fisher[:, start:end],
                                                self.fisher_weighted[:, start:end]).view(-1)
        return self.live

    def _per_group(self, values: torch.Tensor | np.ndarray, columns: int) -> torch.Tensor:
        """``values`` as a ``[groups, columns]`` float32 matrix (one row is shared by every group); bad input
        naming the problem if its shape is wrong or it holds NaN or Inf."""
        values = torch.as_tensor(values, dtype=torch.float32, device=self.live.device)
        if values.ndim == 1 or values.shape[0] == 1:  # one row of weights shared by every group
            values = values.reshape(1, -1).expand(self.grouping.size, -1)
        if tuple(values.shape) != (self.grouping.size, columns):
            raise BadInput(f"weights have shape {list(values.shape)}, this space needs "
                           f"[{self.grouping.size}, {columns}] (groups x rows)")
        if not torch.isfinite(values).all():
            raise BadInput("weights hold NaN or Inf values")
        return values

    def apply(self, method: str, weights: np.ndarray) -> torch.Tensor:
        """Merge with ``method`` (see :mod:`dfwe.merge.methods`) at ``weights`` (``[groups, ingredients]``)."""
        if get_method(method).fisher:
            return self.merge_fisher(weights)
        return self.merge(coefficients(method, weights, self.has_base, self.deltas))

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The live buffer as named tensors (views, no copy)."""
        return {slot.name: self.live[slot.offset : slot.offset + slot.numel].view(slot.shape) for slot in self.slots}

    def row_state(self, row: int) -> dict[str, torch.Tensor]:
        """One stacked row (an ingredient, or the base) as named float32 tensors."""
        return {slot.name: self.stacked[row, slot.offset : slot.offset + slot.numel].view(slot.shape).float()
                for slot in self.slots}


def _return_freed_memory() -> None:
    """Hand the model's old parameter memory back to the OS. glibc keeps freed heap chunks mapped (only its
    top is trimmed by itself), so without this a bound model would hold a second model's worth of RAM."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc (musl): nothing to do
            pass


def _natural_key(name: str) -> list:
    """Sort ``layer.10`` after ``layer.9`` (safetensors files list names alphabetically)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def tensor_layout(named_shapes: Sequence[tuple[str, tuple[int, ...]]]) -> list[TensorSlot]:
    slots, offset = [], 0
    for name, shape in named_shapes:
        slots.append(TensorSlot(name, tuple(shape), offset))
        offset += slots[-1].numel
    if not slots:
        raise BadInput("checkpoints hold no floating-point tensors")
    return slots
