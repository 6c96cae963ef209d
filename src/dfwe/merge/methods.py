"""Merge methods as pure maps from interpolation weights to coefficients over the stacked rows.

``weights`` is ``[groups, ingredients]``; the result is ``[groups, rows]`` where rows are the ingredients
followed by the base (when the space holds one).

* ``linear``: theta = sum_i w_i theta_i (convex when w is on the simplex, affine when it only sums to one);
* ``task_arithmetic``: theta = base + sum_i l_i (theta_i - base) = (1 - sum_i l_i) base + sum_i l_i theta_i.
"""

from __future__ import annotations

import numpy as np

from dfwe.errors import BadInput

METHODS = ("linear", "task_arithmetic")


def linear(weights: np.ndarray, has_base: bool) -> np.ndarray:
    """Coefficients of a weighted sum of the ingredients (the base, if held, gets zero)."""
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    return np.concatenate([weights, np.zeros((weights.shape[0], 1))], axis=1) if has_base else weights


def task_arithmetic(scales: np.ndarray, has_base: bool) -> np.ndarray:
    """Coefficients of base + sum_i l_i (theta_i - base)."""
    if not has_base:
        raise BadInput("task_arithmetic needs a base checkpoint (--base): task vectors are measured from it")
    scales = np.atleast_2d(np.asarray(scales, dtype=np.float64))
    return np.concatenate([scales, 1.0 - scales.sum(axis=1, keepdims=True)], axis=1)


def coefficients(method: str, weights: np.ndarray, has_base: bool) -> np.ndarray:
    """Dispatch on the method name."""
    if method == "linear":
        return linear(weights, has_base)
    if method == "task_arithmetic":
        return task_arithmetic(weights, has_base)
    raise BadInput(f"method: unknown merge method '{method}' (use {', '.join(METHODS)})")
