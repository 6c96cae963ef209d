"""The live merged model: a weight space bound to one model, the examples it is scored on, and its head rule.

The search scores every candidate on it, and the soups, the barriers and the final scores reuse it, so a
merge is always written into the same live parameters (:meth:`WeightSpace.merge`) and nothing is rebuilt.
With ``merge.head: refit`` the fold refits its model's head on the merged body's features of the fold's
*train* examples after every merge (:meth:`DevFold.merge`), so a merge weighs bodies only. A fold built to merge by
``fisher`` first measures every ingredient's Fisher on those train examples (:mod:`dfwe.merge.fisher`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from dfwe.checkpoints import TaskModel, load_model
from dfwe.data.encode import EncodedSet
from dfwe.data.sets import ExampleSet
from dfwe.data.shapes import TaskShape
from dfwe.errors import BadInput
from dfwe.forward import InverseL2, fit_head, predict_logits
from dfwe.merge.fisher import squared_gradients
from dfwe.merge.space import WeightSpace
from dfwe.progress import progress_bar
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
    # refit: at most this many L-BFGS iterations per fit. Each fit starts from the merged head, near its optimum,
    # so a cap bounds what a long-input task's refit costs (token features of thousands of windows) at a small
    # change to the fitted head.
    refit_iterations: int = Field(500, ge=1)
    # what each ingredient is in the merges (the soups, dfwe): "kept", the fine-tune of the recipe it kept on dev;
    # "recipe_soup", the average of its fine-tunes over every recipe of target.grid (dfwe.merge.recipes);
    # "best_on_dev", whichever of the two scores better on dev by target.train.select_metric. The single-model
    # baselines are the kept fine-tunes in every case.
    ingredients: Literal["kept", "recipe_soup", "best_on_dev"] = "kept"


@dataclass(frozen=True)
class HeadRefit:
    """How a merged model's head is refitted after every merge: a probe of inverse L2 strength ``c`` on the merged
    body's features of ``train``, at most ``max_iter`` L-BFGS iterations from the merged head."""

    train: ExampleSet
    c: float = 1.0
    max_iter: int = 500


@dataclass
class DevFold:
    """A weight space bound to its live model, the examples it is scored on, and how its head is set."""

    space: WeightSpace
    model: TaskModel
    data: ExampleSet
    refit: HeadRefit | None = None  # None: the merged head is the ingredients' heads merged like the body

    def merge(self, method: str, weights: np.ndarray, refit: bool = True) -> None:
        """Write the merge into the live model (and, with a :class:`HeadRefit` and ``refit``, refit its head; a
        single ingredient is scored with ``refit=False``: as it was trained, with its own head)."""
        self.space.apply(method, weights)
        if refit and self.refit is not None:
            fit_head(self.model, self.refit.train.shape, self.refit.train.encoded, self.refit.c,
                     max_iter=self.refit.max_iter)

    def logits(self, data: ExampleSet, batch_size: int = 64) -> np.ndarray:
        """The live model's outputs on ``data``."""
        return predict_logits(self.model, data.shape, data.encoded, batch_size)


def ingredient_fishers(space: WeightSpace, model: torch.nn.Module, shape: TaskShape, data: EncodedSet,
                       seed: int = 0) -> torch.Tensor:
    """Every ingredient's diagonal Fisher over the parameters ``space`` holds, ``[ingredients, parameters]``: each
    ingredient written into the live ``model`` (bound to ``space``) with its own head, its Fisher measured on
    ``data`` (:func:`dfwe.merge.fisher.squared_gradients`, targets drawn with ``seed`` and the ingredient's index).
    Leaves the last ingredient in the live model."""
    if len(data) == 0:
        raise BadInput("fisher merging needs train examples to measure each ingredient's Fisher on; the set is empty")
    count = space.num_ingredients
    rows = torch.empty((count, space.stacked.shape[1]), dtype=torch.float32, device=space.live.device)
    bar = progress_bar(count, "fisher")
    for index in range(count):
        space.apply("linear", np.eye(count)[index][None, :])
        generator = torch.Generator().manual_seed(int(np.random.default_rng([seed, index, 0xF15]).integers(2**62)))
        rows[index] = squared_gradients(model, space.names, shape, data, generator)
        bar.update(1)
    bar.close()
    return rows


@dataclass(frozen=True)
class FoldSpec:
    """How to build a :class:`DevFold` anywhere (in this process, or in a Ray worker)."""

    checkpoints: tuple[Path, ...]
    data: ExampleSet
    base: Path | None = None
    device: str = "auto"
    refit: HeadRefit | None = None
    trunk_depth: int | None = None  # a frozen trunk of this many encoder layers: the space holds what is above it
    # the examples every ingredient's Fisher is measured on, for merging by ``fisher`` (None: no Fisher), and the
    # seed its targets are drawn with
    fisher_data: ExampleSet | None = None
    fisher_seed: int = 0

    def build(self) -> DevFold:
        space = WeightSpace.from_checkpoints(list(self.checkpoints), base=self.base, device=resolve_device(self.device),
                                             trunk_depth=self.trunk_depth)
        model = load_model(self.checkpoints[0]).to(space.live.device)
        space.bind(model)
        if self.fisher_data is not None:
            space.set_fisher(ingredient_fishers(space, model, self.fisher_data.shape, self.fisher_data.encoded,
                                                self.fisher_seed))
        return DevFold(space, model, self.data, self.refit)
