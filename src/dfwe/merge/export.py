"""Writing a merge out: a transformers folder, and a mergekit YAML that reproduces it.

``merged/`` holds safetensors weights, the config (with label names), the tokenizer and ``dfwe.json``
(weights, ingredients, method, groups). The folder is written atomically.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import yaml
from transformers import PreTrainedModel

from dfwe.io import atomic_dir, atomic_write_text
from dfwe.merge.space import WeightSpace
from dfwe.models import save_classifier


def export_merged(model: PreTrainedModel, tokenizer, out_dir: Path, weights: np.ndarray, ingredients: Sequence[str],
                  method: str, group_labels: Sequence[str]) -> Path:
    """Save the live (already merged) model and its provenance as a transformers folder."""
    with atomic_dir(out_dir) as tmp:
        save_classifier(model, tokenizer, tmp)
        (tmp / "dfwe.json").write_text(json.dumps({
            "method": method,
            "ingredients": list(ingredients),
            "groups": list(group_labels),
            "weights": np.atleast_2d(weights).tolist(),
        }, indent=2))
    return out_dir


def tensor_weights(space: WeightSpace, weights: np.ndarray) -> dict[str, np.ndarray]:
    """Each tensor's weights over the ingredients under the space's grouping."""
    weights = np.atleast_2d(weights)
    return {slot.name: weights[group] for slot, group in zip(space.slots, space.grouping.index)}


def mergekit_config(space: WeightSpace, weights: np.ndarray, models: Sequence[Path], method: str,
                    base: Path | None = None, density: float = 0.5) -> dict:
    """A mergekit config for this merge.

    ``linear`` and ``task_arithmetic`` are reproduced exactly (to float rounding). For ``ties`` and ``dare``
    the recipe names mergekit's nearest method, which differs: mergekit elects TIES signs on *weighted*
    task vectors and draws its own DARE masks; ``merged/`` holds dfwe's exact weights.

    Per-tensor weights are spelled out as mergekit filters keyed by full tensor names, longest names first
    so that no name's filter can catch a longer name that contains it.
    """
    per_tensor = tensor_weights(space, weights)
    names = sorted(per_tensor, key=len, reverse=True)
    uniform = all(np.allclose(per_tensor[n], per_tensor[names[0]]) for n in names)
    entries = []
    for i, path in enumerate(models):
        if uniform:
            value: object = float(per_tensor[names[0]][i])
        else:
            value = [{"filter": n, "value": float(per_tensor[n][i])} for n in names]
        entries.append({"model": str(Path(path).resolve()), "parameters": {"weight": value}})
    mergekit_method = {"dare": "dare_linear"}.get(method, method)
    config: dict = {"merge_method": mergekit_method, "models": entries, "dtype": "float32", "out_dtype": "float32",
                    "parameters": {"normalize": False}}
    if base is not None:
        config["base_model"] = str(Path(base).resolve())
    if method in ("ties", "dare"):
        config["parameters"]["density"] = density
    return config


def write_mergekit_yaml(path: Path, config: dict) -> None:
    exact = config["merge_method"] in ("linear", "task_arithmetic")
    header = ("# Reproduce this merge with: mergekit-yaml mergekit.yaml OUT_DIR\n" if exact else
              "# mergekit's nearest recipe: its TIES/DARE differ from dfwe's (peft semantics); merged/ is exact\n")
    atomic_write_text(path, header + yaml.safe_dump(config, sort_keys=False))
