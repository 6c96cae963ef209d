"""Merge methods as pure maps from interpolation weights to coefficients over the stacked rows.

``weights`` is ``[groups, ingredients]``; the result is ``[groups, rows]`` where rows are the ingredients
followed by the base (when the space holds one).

Over whole checkpoints:

* ``linear``: theta = sum_i w_i theta_i (convex when w is on the simplex, affine when it only sums to one);
* ``task_arithmetic``: theta = base + sum_i l_i (theta_i - base) = (1 - sum_i l_i) base + sum_i l_i theta_i.

Over task-vector rows (LoRA experts, TIES/DARE-sparsified spaces) every method is base + sum_i w_i row_i.
"""

from __future__ import annotations

import numpy as np

from dfwe.errors import BadInput

METHODS = ("linear", "task_arithmetic", "ties", "dare")


def coefficients(method: str, weights: np.ndarray, has_base: bool, deltas: bool = False) -> np.ndarray:
    """Coefficients over the rows of a space for ``method`` at ``weights``."""
    if method not in METHODS:
        raise BadInput(f"method: unknown merge method '{method}' (use {', '.join(METHODS)})")
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    ones = np.ones((weights.shape[0], 1))
    if deltas:
        return np.concatenate([weights, ones], axis=1)
    if method in ("ties", "dare"):
        raise BadInput(f"{method}: sparsify the space first (WeightSpace.sparsify_), with a base checkpoint")
    if method == "linear":
        return np.concatenate([weights, 0 * ones], axis=1) if has_base else weights
    if not has_base:
        raise BadInput("task_arithmetic needs a base checkpoint (--base): task vectors are measured from it")
    return np.concatenate([weights, ones - weights.sum(axis=1, keepdims=True)], axis=1)
