"""Merge methods, registered by name: how interpolation weights become coefficients over a space's rows.

``weights`` is ``[groups, ingredients]``; coefficients are ``[groups, rows]`` where rows are the ingredients
followed by the base (when the space holds one).

Over whole checkpoints:

* ``linear``: theta = sum_i w_i theta_i (convex when w is on the simplex, affine when it only sums to one);
* ``task_arithmetic``: theta = base + sum_i l_i (theta_i - base) = (1 - sum_i l_i) base + sum_i l_i theta_i.

Over task-vector rows (LoRA experts, and the TIES/DARE-sparsified spaces below) every method is
base + sum_i w_i row_i.

TIES and DARE (peft's ``merge_utils``) are precomputed task-vector rows. peft's TIES trims each task vector
to its top-``density`` magnitudes, elects a sign per entry from the sum of the trimmed vectors (unweighted),
and averages the weighted entries that agree with it, dividing by how many agree. DARE keeps each entry with
probability ``density`` and rescales by ``1/density``. In both, the trimming, the masks and the divisor do not
depend on the merge weights, so

    merge(w) = base + sum_i w_i * row_i,   row_i = trimmed_i * agree_i / max(count, 1)   (TIES)
                                           row_i = kept_i / density                         (DARE)

is exactly peft's result for every ``w``: the search then costs the same matrix-vector product as a linear
merge. DARE's random masks come from a generator seeded per tensor, so a merge is reproducible.

``fisher`` (:mod:`dfwe.merge.fisher`) is no weighted sum of rows: each parameter is weighted by each ingredient's
Fisher as well, which :meth:`dfwe.merge.space.WeightSpace.set_fisher` gives the space first.

Adding a method is one entry in :data:`METHODS`; the command line's ``--method`` choices come from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from dfwe.errors import BadInput


def ties_rows(task_vectors: torch.Tensor, density: float, seed: int) -> torch.Tensor:
    """Rows ``[N, *shape]`` whose weighted sum is peft's ``ties`` merge of ``task_vectors``."""
    from peft.utils.merge_utils import calculate_majority_sign_mask, magnitude_based_pruning

    trimmed = torch.stack([magnitude_based_pruning(t, density) for t in task_vectors])
    agree = calculate_majority_sign_mask(trimmed, method="total")
    return trimmed * agree / torch.clamp(agree.sum(dim=0), min=1.0)


def dare_rows(task_vectors: torch.Tensor, density: float, seed: int) -> torch.Tensor:
    """Rows ``[N, *shape]`` whose weighted sum is peft's ``dare_linear`` merge of ``task_vectors``."""
    from peft.utils.merge_utils import random_pruning

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.stack([random_pruning(t, density, rescale=True) for t in task_vectors])


def linear_coefficients(weights: np.ndarray, has_base: bool) -> np.ndarray:
    """theta = sum_i w_i theta_i (a base row, if any, gets 0)."""
    return np.concatenate([weights, np.zeros((weights.shape[0], 1))], axis=1) if has_base else weights


def task_arithmetic_coefficients(weights: np.ndarray, has_base: bool) -> np.ndarray:
    """theta = base + sum_i l_i (theta_i - base): the base row gets 1 - sum_i l_i."""
    return np.concatenate([weights, 1 - weights.sum(axis=1, keepdims=True)], axis=1)


@dataclass(frozen=True)
class MergeMethod:
    """One merge method: its coefficients over whole checkpoints, or (sparsifying methods) the task-vector rows
    it merges; whether it needs a base checkpoint; and mergekit's method for the same merge."""

    name: str
    needs_base: bool
    mergekit: str
    # whole checkpoints: weights -> coefficients; None for a method that merges task-vector rows
    coefficients: Callable[[np.ndarray, bool], np.ndarray] | None = None
    # task vectors [N, *shape], density, seed -> rows whose weighted sum is the merge
    sparsify: Callable[[torch.Tensor, float, int], torch.Tensor] | None = None
    # mergekit computes the same merge (its TIES elects signs on *weighted* vectors, its DARE draws its own masks;
    # it has no Fisher weighting)
    exact_in_mergekit: bool = True
    # weighted by each ingredient's Fisher too: the space merges it itself (WeightSpace.merge_fisher)
    fisher: bool = False


METHODS: dict[str, MergeMethod] = {method.name: method for method in (
    MergeMethod("linear", needs_base=False, mergekit="linear", coefficients=linear_coefficients),
    MergeMethod("task_arithmetic", needs_base=True, mergekit="task_arithmetic",
                coefficients=task_arithmetic_coefficients),
    MergeMethod("ties", needs_base=True, mergekit="ties", sparsify=ties_rows, exact_in_mergekit=False),
    MergeMethod("dare", needs_base=True, mergekit="dare_linear", sparsify=dare_rows, exact_in_mergekit=False),
    MergeMethod("fisher", needs_base=False, mergekit="linear", exact_in_mergekit=False, fisher=True),
)}


def get_method(name: str) -> MergeMethod:
    """The registered merge method called ``name``."""
    try:
        return METHODS[name]
    except KeyError:
        raise BadInput(f"method: unknown merge method '{name}' (use {', '.join(METHODS)})") from None


def coefficients(method: str, weights: np.ndarray, has_base: bool, deltas: bool = False) -> np.ndarray:
    """Coefficients over the rows of a space for ``method`` at ``weights``."""
    entry = get_method(method)
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    if deltas:  # task-vector rows: base + sum_i w_i row_i, whatever the method
        return np.concatenate([weights, np.ones((weights.shape[0], 1))], axis=1)
    if entry.fisher:
        raise BadInput(f"{method}: a Fisher-weighted merge is no weighted sum of rows; merge it with "
                       "WeightSpace.apply once the space holds each ingredient's Fisher (WeightSpace.set_fisher)")
    if entry.coefficients is None:
        raise BadInput(f"{method}: sparsify the space first (WeightSpace.sparsify_), with a base checkpoint")
    if entry.needs_base and not has_base:
        raise BadInput(f"{method} needs a base checkpoint (--base): task vectors are measured from it")
    return entry.coefficients(weights, has_base)


def sparsified_rows(task_vectors: torch.Tensor, method: str, density: float, seed: int) -> torch.Tensor:
    """Rows ``[N, *shape]`` whose weighted sum is ``method``'s merge of ``task_vectors`` (peft semantics)."""
    if not 0.0 < density <= 1.0:
        raise BadInput(f"density: must be in (0, 1] (got {density})")
    sparsify = get_method(method).sparsify
    if sparsify is None:
        raise BadInput(f"method: '{method}' does not sparsify (use "
                       f"{', '.join(m.name for m in METHODS.values() if m.sparsify)})")
    return sparsify(task_vectors, density, seed)
