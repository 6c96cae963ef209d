"""How a run is executed, apart from what it computes: the device, CPU threads, parallel scorers, batch sizes.

These options change neither which models are trained nor which candidates are scored (at most the last bits of
float sums), so they enter no content key and no journal fingerprint, and a run resumes under other ones. They
are saved with the recipe in ``config.yaml`` (its ``runtime`` section), as mergekit keeps its ``MergeOptions``
apart from the merge configuration.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from pydantic import Field

from dfwe.errors import BadInput
from dfwe.schema import Frozen


class RuntimeOptions(Frozen):
    """Where and how fast a run executes."""

    device: str = "auto"
    # CPU threads PyTorch uses during the run (None: its default, one per core). Float results depend on the
    # count, so pinning it lets a run be reproduced bit for bit on a machine with another number of cores.
    threads: int | None = Field(None, ge=1)
    # Ray workers scoring search candidates in parallel, and the cluster they join (None: a local one).
    workers: int = Field(1, ge=1)
    ray_address: str | None = None
    # Rows per forward pass when scoring: search candidates on dev, and every method at the end.
    search_batch_size: int = Field(64, ge=1)
    eval_batch_size: int = Field(64, ge=1)


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise BadInput(f"device: '{name}' is not a torch device (use auto, cpu or cuda)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BadInput(f"device: '{name}' requested but CUDA is not available (use auto or cpu)")
    return device


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with PyTorch on ``threads`` CPU threads (None: leave PyTorch's setting), restored after:
    float results depend on the thread count, so a pinned count reproduces a run on another core count."""
    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
