"""TIES and DARE as precomputed task-vector rows, built from peft's ``merge_utils``.

peft's TIES trims each task vector to its top-``density`` magnitudes, elects a sign per entry from the sum
of the trimmed vectors (unweighted), and averages the weighted entries that agree with it, dividing by how
many agree. DARE keeps each entry with probability ``density`` and rescales by ``1/density``. In both, the
trimming, the masks and the divisor do not depend on the merge weights, so

    merge(w) = base + sum_i w_i * row_i,   row_i = trimmed_i * agree_i / max(count, 1)   (TIES)
                                           row_i = kept_i / density                         (DARE)

is exactly peft's result for every ``w``: the search then costs the same matrix-vector product as a linear
merge. DARE's random masks come from a generator seeded per tensor, so a merge is reproducible.
"""

from __future__ import annotations

import torch
from peft.utils.merge_utils import calculate_majority_sign_mask, magnitude_based_pruning, random_pruning

from dfwe.errors import BadInput

SPARSIFIERS = ("ties", "dare")


def sparsified_rows(task_vectors: torch.Tensor, method: str, density: float, seed: int) -> torch.Tensor:
    """Rows ``[N, *shape]`` whose weighted sum is peft's ``ties``/``dare_linear`` merge of ``task_vectors``."""
    if not 0.0 < density <= 1.0:
        raise BadInput(f"density: must be in (0, 1] (got {density})")
    if method == "ties":
        trimmed = torch.stack([magnitude_based_pruning(t, density) for t in task_vectors])
        agree = calculate_majority_sign_mask(trimmed, method="total")
        return trimmed * agree / torch.clamp(agree.sum(dim=0), min=1.0)
    if method == "dare":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return torch.stack([random_pruning(t, density, rescale=True) for t in task_vectors])
    raise BadInput(f"method: unknown sparsifying merge '{method}' (use {', '.join(SPARSIFIERS)})")
