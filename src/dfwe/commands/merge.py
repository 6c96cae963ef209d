"""``dfwe merge``: apply given weights to checkpoints and write the merged model."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from safetensors.torch import save_file

from dfwe.checkpoints import load_model, load_tokenizer, model_task
from dfwe.errors import BadInput
from dfwe.io import claim_output_dir
from dfwe.merge.export import export_merged, mergekit_config, write_mergekit_yaml
from dfwe.merge.methods import get_method
from dfwe.merge.space import WeightSpace


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
    random masks seeded by ``seed``); all but linear need ``base``. A transformers folder in gives a
    transformers folder out (plus ``dfwe.json`` and ``mergekit.yaml``); bare ``.safetensors`` files in give
    ``out_dir/model.safetensors``. An ``out_dir`` that already holds files is bad input unless ``overwrite``;
    every input is checked, and the merge computed, before ``out_dir`` is touched.
    """
    if get_method(method).needs_base and base is None:
        raise BadInput(f"--method {method} needs --base (the checkpoint task vectors are measured from)")
    space = WeightSpace.from_checkpoints(list(paths), base=base)
    if get_method(method).sparsify is not None:
        space.sparsify_(method, density, seed)
    space.set_grouping(granularity, block_size)
    matrix = weight_matrix(weights, space.grouping.size, space.num_ingredients)
    names = [str(p) for p in paths]
    if (Path(paths[0]) / "config.json").is_file():
        model = load_model(Path(paths[0]))
        task, prep = model_task(Path(paths[0]))
        space.bind(model)
        space.apply(method, matrix)
        claim_output_dir(out_dir, None, resume=False, overwrite=overwrite)
        export_merged(model, load_tokenizer(Path(paths[0])), out_dir, matrix, names, method, space.grouping.labels,
                      prep, task)
    else:
        space.apply(method, matrix)
        claim_output_dir(out_dir, None, resume=False, overwrite=overwrite)
        save_file({k: v.contiguous() for k, v in space.state_dict().items()}, str(out_dir / "model.safetensors"))
    write_mergekit_yaml(out_dir / "mergekit.yaml",
                        mergekit_config(space, matrix, list(paths), method, base, density, relative_to=out_dir))
    return out_dir
