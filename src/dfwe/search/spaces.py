"""Search spaces: how an optimiser's vector ``x`` becomes merge weights ``[groups, ingredients]``.

* ``simplex``: convex weights, a softmax over each group's ingredients (``x = 0`` is uniform);
* ``box``: each weight on its own in ``[0, 1]``, no normalisation;
* ``affine``: weights that sum to one per group but may be negative (``x`` projected onto the plane);
* ``task_arithmetic``: per-ingredient scales of task vectors from the base, each in ``[-0.5, 1.5]``;
* ``fisher``: the simplex's weights for a Fisher-weighted merge (:mod:`dfwe.merge.fisher`), whose weights say how
  much each ingredient counts and each ingredient's Fisher where.

Every space has a starting point ``x0`` whose weights are ``init`` (uniform unless given).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dfwe.errors import BadInput

SPACES = ("simplex", "box", "affine", "task_arithmetic", "fisher")
_TA_BOUNDS = (-0.5, 1.5)


@dataclass(frozen=True)
class SearchSpace:
    """A map from ``R^dim`` (within ``bounds``) to ``[groups, ingredients]`` weights."""

    kind: str
    groups: int
    ingredients: int
    init: np.ndarray  # [groups, ingredients] weights at x0

    @property
    def on_simplex(self) -> bool:
        """Whether the weights are a softmax of ``x`` per group (convex, every one positive)."""
        return self.kind in ("simplex", "fisher")

    @property
    def dim(self) -> int:
        return self.groups * self.ingredients

    @property
    def method(self) -> str:
        """The merge method this space's weights are meant for."""
        return self.kind if self.kind in ("task_arithmetic", "fisher") else "linear"

    @property
    def soup_method(self) -> str:
        """The method a soup (a linear merge at weights that sum to one) is scored with in this space: its own where
        that gives the same merge (linear, task arithmetic), linear where it would not (fisher)."""
        return "linear" if self.method == "fisher" else self.method

    @property
    def bounds(self) -> tuple[float, float] | None:
        if self.on_simplex:
            return None
        if self.kind == "box":
            return (0.0, 1.0)
        if self.kind == "affine":
            return (-1.0, 2.0)
        return _TA_BOUNDS

    @property
    def x0(self) -> np.ndarray:
        if self.on_simplex:
            return np.log(np.clip(self.init, 1e-6, None)).ravel() - np.log(np.clip(self.init, 1e-6, None)).mean()
        return self.init.ravel().copy()

    def to_weights(self, x: np.ndarray) -> np.ndarray:
        """Weights ``[groups, ingredients]`` for one point ``x``."""
        x = np.asarray(x, dtype=np.float64).reshape(self.groups, self.ingredients)
        if self.on_simplex:
            shifted = np.exp(x - x.max(axis=1, keepdims=True))
            return shifted / shifted.sum(axis=1, keepdims=True)
        lo, hi = self.bounds  # type: ignore[misc]
        x = np.clip(x, lo, hi)
        if self.kind == "affine":
            return x + (1.0 - x.sum(axis=1, keepdims=True)) / self.ingredients
        return x

    def to_x(self, weights: np.ndarray) -> np.ndarray:
        """A point whose weights are ``weights`` (inverse of :meth:`to_weights` where one exists)."""
        weights = np.asarray(weights, dtype=np.float64).reshape(self.groups, self.ingredients)
        if self.on_simplex:
            logs = np.log(np.clip(weights, 1e-9, None))
            return (logs - logs.mean(axis=1, keepdims=True)).ravel()
        return weights.ravel().copy()


def make_space(kind: str, groups: int, ingredients: int, init: np.ndarray | None = None) -> SearchSpace:
    """Build a space; ``init`` (``[ingredients]`` or ``[groups, ingredients]``) sets the start point."""
    if kind not in SPACES:
        raise BadInput(f"space: unknown search space '{kind}' (use {', '.join(SPACES)})")
    if ingredients < 1:
        raise BadInput("a search needs at least one ingredient")
    if init is None:
        init = np.full(ingredients, 1.0 / ingredients) if kind != "task_arithmetic" else np.full(ingredients, 0.5)
    init = np.broadcast_to(np.asarray(init, dtype=np.float64), (groups, ingredients)).copy()
    return SearchSpace(kind=kind, groups=groups, ingredients=ingredients, init=init)
