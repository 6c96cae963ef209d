"""Writing a merge out: a transformers folder, and a mergekit YAML that reproduces it.

``merged/`` holds safetensors weights, the config (task shape, pooling, label names), the tokenizer and
``dfwe.json`` (preprocessing, weights, ingredients, method, groups). The folder is written atomically.

``mergekit.yaml`` names the ingredients by paths relative to the folder the recipe is written in, so a run
folder that holds its ingredients (the default ``work/`` cache) can be moved as a whole; ``dfwe mergekit``
runs a recipe with the ingredients looked up elsewhere (``--ingredients-dir``) and dfwe's model classes
registered, which mergekit needs to read dfwe's ``config.json``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import yaml

from dfwe.checkpoints import TaskModel, load_tokenizer, model_task, save_model
from dfwe.data.encode import Preprocessing
from dfwe.data.records import Task
from dfwe.io import atomic_dir, atomic_write_text
from dfwe.merge.fold import DevFold
from dfwe.merge.methods import METHODS, get_method
from dfwe.merge.space import WeightSpace


def export_merged(model: TaskModel, tokenizer: Any, out_dir: Path, weights: np.ndarray,
                  ingredients: Sequence[str], method: str, group_labels: Sequence[str], prep: Preprocessing,
                  task: Task, info: dict[str, Any] | None = None) -> Path:
    """Save the live (already merged) model and its provenance as a transformers folder."""
    with atomic_dir(out_dir) as tmp:
        save_model(model, tokenizer, tmp, prep, task, {"method": method, "ingredients": list(ingredients),
                                                 "groups": list(group_labels),
                                                 "weights": np.atleast_2d(weights).tolist(), **(info or {})})
    return out_dir


def tensor_weights(space: WeightSpace, weights: np.ndarray) -> dict[str, np.ndarray]:
    """Each tensor's weights over the ingredients under the space's grouping."""
    weights = np.atleast_2d(weights)
    return {slot.name: weights[group] for slot, group in zip(space.slots, space.grouping.index)}


def _relative(path: Path, start: Path | None) -> str:
    return str(Path(path).resolve()) if start is None else os.path.relpath(Path(path).resolve(), start.resolve())


def mergekit_config(space: WeightSpace, weights: np.ndarray, models: Sequence[Path], method: str,
                    base: Path | None = None, density: float = 0.5, relative_to: Path | None = None,
                    head_from: Path | None = None) -> dict:
    """A mergekit config for this merge.

    ``linear`` and ``task_arithmetic`` are reproduced exactly (to float rounding). For ``ties``, ``dare`` and
    ``fisher`` the recipe names mergekit's nearest method, which differs: mergekit elects TIES signs on *weighted*
    task vectors, draws its own DARE masks and has no Fisher weighting (the recipe is the linear merge at the same
    weights); ``merged/`` holds dfwe's exact weights.

    Per-tensor weights are spelled out as mergekit filters keyed by full tensor names, longest names first
    so that no name's filter can catch a longer name that contains it. Paths are relative to ``relative_to``
    (the recipe's folder) when given. ``head_from`` (a refit head, which no weighting of the ingredients gives)
    adds that folder as one more model, weight 1 on the head's tensors and 0 elsewhere.
    """
    per_tensor = tensor_weights(space, weights)
    if head_from is not None:
        models = [*models, head_from]
        per_tensor = {n: (np.append(0 * w, 1.0) if n.startswith("head.") else np.append(w, 0.0))
                      for n, w in per_tensor.items()}
    names = sorted(per_tensor, key=len, reverse=True)
    uniform = not space.frozen and all(np.allclose(per_tensor[n], per_tensor[names[0]]) for n in names)
    entries = []
    for i, path in enumerate(models):
        if uniform:
            value: object = float(per_tensor[names[0]][i])
        else:
            value = [{"filter": n, "value": float(per_tensor[n][i])} for n in names]
            if space.frozen:  # every other tensor (a frozen trunk's, the same in every model): the first model's
                value.append({"value": 1.0 if i == 0 else 0.0})
        entries.append({"model": _relative(path, relative_to), "parameters": {"weight": value}})
    config: dict = {"merge_method": get_method(method).mergekit, "models": entries, "dtype": "float32", "out_dtype": "float32",
                    "parameters": {"normalize": False}}
    if base is not None:
        config["base_model"] = _relative(base, relative_to)
    if get_method(method).sparsify is not None:
        config["parameters"]["density"] = density
    return config


def write_mergekit_yaml(path: Path, config: dict, method: str | None = None) -> None:
    """Write ``config`` as ``path``, headed by whether mergekit reproduces the merge: as dfwe's ``method`` says, or
    (no ``method``) as whether any method mergekit names so reproduces exactly."""
    exact = (get_method(method).exact_in_mergekit if method is not None else
             any(m.mergekit == config["merge_method"] and m.exact_in_mergekit for m in METHODS.values()))
    header = ("# Reproduce this merge with: dfwe mergekit mergekit.yaml OUT_DIR  (paths are relative to this file)\n"
              if exact else
              "# mergekit's nearest recipe, not this merge (its TIES/DARE differ from peft's, it has no Fisher "
              "weighting); merged/ is exact\n")
    atomic_write_text(path, header + yaml.safe_dump(config, sort_keys=False))


def export_merge(out_dir: Path, fold: DevFold, weights: np.ndarray, method: str, ingredients: Sequence[str],
                 base: Path | None = None, prep: Preprocessing | None = None) -> None:
    """Write ``fold``'s merge at ``weights`` as ``out_dir/merged`` (the first ingredient's class, task and tokenizer;
    its preprocessing unless ``prep`` says otherwise) and the mergekit recipe that reproduces it as
    ``out_dir/mergekit.yaml``.

    The recipe names the ingredient folders relative to ``out_dir``; a refit head (which no weighting of the
    ingredients gives) is read from ``merged/`` itself.
    """
    folders = [Path(path) for path in fold.space.ingredients]
    task, recorded = model_task(folders[0])
    fold.merge(method, weights)  # the live model becomes the merge (head rule included)
    export_merged(fold.model, load_tokenizer(folders[0]), out_dir / "merged", weights, ingredients, method,
                  fold.space.grouping.labels, prep or recorded, task)
    head_from = out_dir / "merged" if fold.refit is not None else None
    write_mergekit_yaml(out_dir / "mergekit.yaml", mergekit_config(fold.space, weights, folders, method, base,
                                                                   relative_to=out_dir, head_from=head_from),
                        method)
