"""The live merged model: a weight space bound to one model, the examples it is scored on, and its head rule.

The search scores every candidate on it, and the soups, the barriers and the final scores reuse it, so a
merge is always written into the same live parameters (:meth:`WeightSpace.merge`) and nothing is rebuilt.
With ``merge.head: refit`` the fold refits its model's head on the merged body's features of the fold's
*train* examples after every merge (:meth:`DevFold.merge`), so a merge weighs bodies only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from dfwe.checkpoints import TaskModel, load_model
from dfwe.data.sets import ExampleSet
from dfwe.forward import InverseL2, fit_head, predict_logits
from dfwe.merge.space import WeightSpace
from dfwe.runtime import resolve_device
from dfwe.schema import Frozen


class MergeConfig(Frozen):
    """How a merged model (the soups, dfwe) gets its head.

    "average": the head is merged with the body, like every other tensor; "refit": for every candidate the
    head is fitted afresh (a probe, inverse L2 strength probe_c) on the merged body's features of the
    few-sample *train* set, so the search weighs bodies only and no dev data reaches the head.
    """

    head: Literal["average", "refit"] = "average"
    probe_c: InverseL2 = 1.0
    # refit: fit on at most this many train examples (a seeded subset), to bound its cost on long inputs
    refit_examples: int | None = Field(None, ge=1)


@dataclass
class DevFold:
    """A weight space bound to its live model, the examples it is scored on, and how its head is set."""

    space: WeightSpace
    model: TaskModel
    data: ExampleSet
    head_train: ExampleSet | None = None  # refit: the examples the head is fitted on after every merge
    probe_c: float = 1.0

    def merge(self, method: str, weights: np.ndarray, refit: bool = True) -> None:
        """Write the merge into the live model (and, with ``head_train`` and ``refit``, refit its head; a single
        ingredient is scored with ``refit=False``: as it was trained, with its own head)."""
        self.space.apply(method, weights)
        if refit and self.head_train is not None:
            fit_head(self.model, self.head_train.shape, self.head_train.encoded, self.probe_c)

    def logits(self, data: ExampleSet, batch_size: int = 64) -> np.ndarray:
        """The live model's outputs on ``data``."""
        return predict_logits(self.model, data.shape, data.encoded, batch_size)


@dataclass(frozen=True)
class FoldSpec:
    """How to build a :class:`DevFold` anywhere (in this process, or in a Ray worker)."""

    checkpoints: tuple[Path, ...]
    data: ExampleSet
    base: Path | None = None
    device: str = "auto"
    head_train: ExampleSet | None = None
    probe_c: float = 1.0
    trunk_depth: int | None = None  # a frozen trunk of this many encoder layers: the space holds what is above it

    def build(self) -> DevFold:
        space = WeightSpace.from_checkpoints(list(self.checkpoints), base=self.base, device=resolve_device(self.device),
                                             trunk_depth=self.trunk_depth)
        model = load_model(self.checkpoints[0]).to(space.live.device)
        space.bind(model)
        return DevFold(space, model, self.data, self.head_train, self.probe_c)
