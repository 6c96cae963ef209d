"""``dfwe merge``: apply given weights to checkpoints and write the merged model."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from dfwe.checkpoints import check_one_task, save_tensors_like
from dfwe.errors import BadInput
from dfwe.io import output_folder
from dfwe.merge.export import mergekit_config, write_mergekit_yaml
from dfwe.merge.methods import get_method
from dfwe.merge.space import WeightSpace
from dfwe.schema import Seed, checked


def weight_matrix(values: Sequence[float], groups: int, ingredients: int) -> np.ndarray:
    """Reshape a flat weight list to ``[groups, ingredients]`` (one row is shared by all groups)."""
    array = np.asarray(values, dtype=np.float64)
    if not np.isfinite(array).all():
        raise BadInput(f"--weights: {values} holds NaN or Inf")
    if array.size == ingredients:
        return np.broadcast_to(array, (groups, ingredients)).copy()
    if array.size == groups * ingredients:
        return array.reshape(groups, ingredients)
    raise BadInput(f"--weights: got {array.size} values for {ingredients} checkpoints; give {ingredients}"
                   + (f" (or {groups} groups x {ingredients} = {groups * ingredients})" if groups > 1 else ""))


def merge_checkpoints(paths: Sequence[Path], weights: Sequence[float], out_dir: Path, base: Path | None = None,
                      method: str = "linear", granularity: str = "model", block_size: int = 2,
                      density: float = 0.5, seed: int = 0, overwrite: bool = False) -> Path:
    """Merge ``paths`` with ``weights`` and write ``out_dir``.

    ``method`` is linear, task_arithmetic, or ties / dare (peft semantics, trimming to ``density``; DARE's
    random masks seeded by ``seed``); all but linear need ``base``. Any transformers checkpoints of one
    architecture and one task merge (safetensors, the same tensor names and shapes, the same labels): a folder
    in gives a folder of the same class out, with the first's config and tokenizer (and, for dfwe's folders,
    ``dfwe.json`` with the merge's provenance), plus ``mergekit.yaml``; bare ``.safetensors`` files in give
    ``out_dir/model.safetensors``. An ``out_dir`` that already holds files is bad input unless ``overwrite``;
    every input is checked, and the merge computed, before ``out_dir`` is touched, and earlier results are only
    replaced once the new ones are written.
    """
    paths = [Path(p) for p in paths]
    checked(Seed, seed, "--seed")
    if get_method(method).fisher:
        raise BadInput(f"--method {method} weighs each checkpoint by its Fisher on a train set, which dfwe merge does "
                       "not read: search it with dfwe search --space fisher --train FILE, or in a run (search.space: "
                       "fisher)")
    if get_method(method).needs_base and base is None:
        raise BadInput(f"--method {method} needs --base (the checkpoint task vectors are measured from)")
    if all(path.is_dir() for path in paths):
        check_one_task(paths)
    space = WeightSpace.from_checkpoints(paths, base=base)
    if get_method(method).sparsify is not None:
        space.sparsify_(method, density, seed)
    space.set_grouping(granularity, block_size)
    matrix = weight_matrix(weights, space.grouping.size, space.num_ingredients)
    space.apply(method, matrix)
    provenance = {"method": method, "ingredients": [str(p) for p in paths], "groups": list(space.grouping.labels),
                  "weights": matrix.tolist()}
    with output_folder(out_dir, None, overwrite=overwrite) as out:
        save_tensors_like(paths[0], space.state_dict(), out, provenance)
        write_mergekit_yaml(out / "mergekit.yaml",
                            mergekit_config(space, matrix, paths, method, base, density, relative_to=out), method)
    return out_dir
