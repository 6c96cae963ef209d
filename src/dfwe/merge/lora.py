"""LoRA experts composed exactly: ``W = W_base + sum_i w_i * s_i * B_i A_i``.

Each adapter's low-rank update is expanded to its dense product ``s_i B_i A_i`` once, when the space is
built, so a merge weights whole products. Weighting ``A`` and ``B`` separately (LoraHub's
``(sum w_i B_i)(sum w_i A_i)``) adds cross terms ``w_i w_j B_i A_j`` and is *not* this merge. Modules an
adapter trains in full (``modules_to_save``, e.g. a classification head) enter as ``theta_i - theta_base``.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Sequence

import torch

from dfwe.checkpoints import read_tensors
from dfwe.errors import BadInput
from dfwe.merge.space import WeightSpace, tensor_layout

_PREFIX = "base_model.model."


def _pattern_value(patterns: dict[str, float], module: str, default: float) -> float:
    """peft's rank_pattern / alpha_pattern lookup: the first pattern matching the module's name suffix."""
    for pattern, value in patterns.items():
        if re.match(rf"(.*\.)?({pattern})$", module):
            return value
    return default


def read_adapter(folder: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """An adapter's config and tensors (safetensors only)."""
    config_path, weights_path = folder / "adapter_config.json", folder / "adapter_model.safetensors"
    if not config_path.is_file() or not weights_path.is_file():
        raise BadInput(f"{folder}: not a PEFT adapter folder (needs adapter_config.json and adapter_model.safetensors)")
    config = json.loads(config_path.read_text())
    if config.get("peft_type") != "LORA":
        raise BadInput(f"{config_path}: peft_type {config.get('peft_type')!r} is not LORA")
    if config.get("use_dora"):
        raise BadInput(f"{config_path}: DoRA adapters are not linear in their weights; dfwe merges plain LoRA only")
    return config, read_tensors(weights_path)


def dense_updates(config: dict, tensors: dict[str, torch.Tensor], origin: Path) -> tuple[dict[str, torch.Tensor],
                                                                                       dict[str, torch.Tensor]]:
    """``({base weight name: s * B @ A}, {name: fully trained tensor})`` for one adapter."""
    updates, full = {}, {}
    for name, tensor in tensors.items():
        bare = name[len(_PREFIX):] if name.startswith(_PREFIX) else name
        if ".lora_A." in bare:
            module = bare.split(".lora_A.")[0]
            b_name = name.replace(".lora_A.", ".lora_B.")
            if b_name not in tensors:
                raise BadInput(f"{origin}: '{name}' has no matching lora_B tensor")
            rank = int(_pattern_value(config.get("rank_pattern") or {}, module, config["r"]))
            alpha = float(_pattern_value(config.get("alpha_pattern") or {}, module, config["lora_alpha"]))
            scale = alpha / (math.sqrt(rank) if config.get("use_rslora") else rank)
            product = scale * (tensors[b_name].float() @ tensor.float())
            updates[f"{module}.weight"] = product.T if config.get("fan_in_fan_out") else product
        elif ".lora_B." in bare:
            continue
        elif "lora_" in bare:
            raise BadInput(f"{origin}: tensor '{name}' is a LoRA variant dfwe does not merge (only lora_A/lora_B)")
        else:
            full[bare] = tensor.float()
    return updates, full


def lora_space(base: Path, adapters: Sequence[Path], device: str | torch.device = "cpu",
               storage_dtype: torch.dtype = torch.float32) -> WeightSpace:
    """A space whose rows are each adapter's dense update (plus fully trained modules) over ``base``.

    Only tensors some adapter changes are held; a live model bound to it keeps every other base weight.
    """
    base_tensors = read_tensors(base)
    per_adapter = [dense_updates(*read_adapter(a), a) for a in adapters]
    names = sorted({n for updates, full in per_adapter for n in (*updates, *full)})
    for name in names:
        if name not in base_tensors:
            raise BadInput(f"adapter tensor '{name}' has no counterpart in base checkpoint {base}")
    slots = tensor_layout([(n, tuple(base_tensors[n].shape)) for n in names])
    stacked = torch.zeros((len(adapters) + 1, slots[-1].offset + slots[-1].numel), dtype=storage_dtype, device=device)
    for row, ((updates, full), origin) in enumerate(zip(per_adapter, adapters)):
        for slot in slots:
            if slot.name in updates:
                delta = updates[slot.name]
            elif slot.name in full:
                delta = full[slot.name] - base_tensors[slot.name].float()
            else:
                continue
            if tuple(delta.shape) != slot.shape:
                raise BadInput(f"adapter {origin}: update of '{slot.name}' has shape {list(delta.shape)}, base "
                               f"{base} holds {list(slot.shape)}")
            stacked[row, slot.offset : slot.offset + slot.numel] = delta.reshape(-1).to(stacked.dtype)
    for slot in slots:
        stacked[-1, slot.offset : slot.offset + slot.numel] = base_tensors[slot.name].reshape(-1).to(stacked.dtype)
    return WeightSpace(slots, stacked, [str(a) for a in adapters], has_base=True, deltas=True)
