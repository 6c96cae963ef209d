"""Building, loading and saving dfwe models (see :mod:`dfwe.modeling` for the classes).

Every checkpoint dfwe writes is a transformers folder in safetensors (``config.json``, ``model.safetensors``,
tokenizer files) plus ``dfwe.json``: the task shape, the label order, the pooling and the preprocessing
(max length, context turns, window stride) the model was trained with, so that whoever scores it later
prepares inputs the same way. Nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors import safe_open
from transformers import AutoConfig, AutoTokenizer, PreTrainedConfig

from dfwe.data.encode import Preprocessing
from dfwe.data.records import Task
from dfwe.data.shapes import get_shape
from dfwe.errors import BadInput
from dfwe.modeling import DfweConfig, DfweModel, DfwePreTrainedModel, base_pooling

INFO_FILE = "dfwe.json"
# files whose bytes determine what a model folder computes (tokenizer included: it makes the inputs)
_CONTENT_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json",
                  "modules.json", "1_Pooling/config.json")


def weight_files(path: Path) -> list[Path]:
    """The safetensors file(s) of a checkpoint: a transformers folder (sharded or not) or one ``.safetensors`` file."""
    if path.is_file() and path.suffix == ".safetensors":
        return [path]
    if not path.is_dir():
        raise BadInput(f"{path}: checkpoint not found (give a transformers folder or a .safetensors file)")
    index = path / "model.safetensors.index.json"
    if index.is_file():
        return [path / shard for shard in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
    if (path / "model.safetensors").is_file():
        return [path / "model.safetensors"]
    raise BadInput(f"{path}: no model.safetensors in this folder (dfwe reads safetensors checkpoints only)")


def content_digest(folder: Path) -> str:
    """A hash of the bytes that determine what a model folder computes: config, weights, tokenizer, pooling."""
    hasher = hashlib.sha256()
    for name in [*_CONTENT_FILES, *(f.name for f in weight_files(folder))]:
        path = folder / name
        if path.is_file():
            hasher.update(name.encode())
            with path.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 24), b""):
                    hasher.update(block)
    return hasher.hexdigest()


def encoder_config(base: Path, trust_remote_code: bool = False) -> PreTrainedConfig:
    """The encoder architecture of a base folder (a dfwe folder gives its body's)."""
    if not (base / "config.json").is_file():
        raise BadInput(f"{base}: not a transformers model folder (config.json missing)")
    raw = json.loads((base / "config.json").read_text())
    if raw.get("model_type") == DfweConfig.model_type:
        return DfweConfig.from_pretrained(str(base)).encoder_config
    try:
        return AutoConfig.from_pretrained(str(base), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:
        raise BadInput(f"{base}: cannot read its config ({str(error).splitlines()[0]})") from None


def resolve_pooling(base: Path, requested: str = "auto") -> tuple[str, bool]:
    """``(pooling, normalize)``: as requested, or (``auto``) as the base declares.

    A sentence-transformers folder declares its pooling; a plain BERT-style checkpoint keeps its pretrained
    ``pooler`` when it has one, else the first token.
    """
    declared = base_pooling(base)
    if requested != "auto":
        return requested, bool(declared and declared[1])
    if declared is not None:
        return declared
    with_pooler = any(".pooler." in f".{name}" for f in weight_files(base) for name in _tensor_names(f))
    return ("pooler" if with_pooler else "cls"), False


def _tensor_names(file: Path) -> list[str]:
    with safe_open(str(file), framework="pt") as handle:
        return list(handle.keys())


def read_tensors(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a model folder (safetensors, no pickle)."""
    tensors: dict[str, torch.Tensor] = {}
    for file in weight_files(folder):
        with safe_open(str(file), framework="pt") as handle:
            tensors.update({name: handle.get_tensor(name) for name in handle.keys()})
    return tensors


def load_body(model: DfwePreTrainedModel, source: Path) -> None:
    """Copy the encoder weights of ``source`` (a dfwe folder, or any checkpoint of the base) into ``model.body``.

    Tensor names are matched as they are, or with their first component (``body.``, ``bert.``, ...) removed.
    A tensor the body needs and ``source`` lacks, or one of the wrong shape, is bad input.
    """
    expected = model.body.state_dict()
    found: dict[str, torch.Tensor] = {}
    for name, tensor in read_tensors(source).items():
        bare = name if name in expected else name.split(".", 1)[-1]
        if bare in expected:
            found[bare] = tensor
    buffers = {name for name, _ in model.body.named_buffers()}
    missing = [name for name in expected if name not in found and name not in buffers]
    if missing:
        raise BadInput(f"{source}: lacks encoder tensor '{missing[0]}' of the base architecture "
                       f"({len(missing)} missing); is it a checkpoint of the same base model?")
    for name, tensor in found.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise BadInput(f"{source}: tensor '{name}' has shape {list(tensor.shape)}, the base architecture "
                           f"expects {list(expected[name].shape)}")
    model.body.load_state_dict(found, strict=False)


def new_model(base: Path, shape: str, labels: Sequence[str], pooling: tuple[str, bool],
              body_from: Path | None = None, trust_remote_code: bool = False) -> DfwePreTrainedModel:
    """A dfwe model of ``shape`` whose body is read from ``body_from`` (default: the base) and whose head is
    freshly initialised from torch's current random state (seed it first)."""
    config = DfweConfig(encoder_config=encoder_config(base, trust_remote_code), pooling=pooling[0],
                        normalize=pooling[1], shape=shape, num_labels=len(labels) or 1,
                        id2label=dict(enumerate(labels)) if labels else None,
                        label2id={label: i for i, label in enumerate(labels)} if labels else None)
    model = get_shape(shape).model_class(config)
    load_body(model, body_from or base)
    return model


def load_model(folder: Path) -> DfwePreTrainedModel:
    """A dfwe model folder as its task shape's class."""
    if not (folder / "config.json").is_file():
        raise BadInput(f"{folder}: not a model folder (config.json missing)")
    raw = json.loads((folder / "config.json").read_text())
    if raw.get("model_type") != DfweConfig.model_type:
        raise BadInput(f"{folder}: not a dfwe model (config.json has model_type {raw.get('model_type')!r}); "
                       "dfwe scores and searches the models it trained (see dfwe run)")
    config = DfweConfig.from_pretrained(str(folder))
    cls = get_shape(config.shape).model_class if raw.get("architectures", [""])[0] != DfweModel.__name__ else DfweModel
    return cls.from_pretrained(str(folder), dtype=torch.float32)


def save_model(model: DfwePreTrainedModel, tokenizer: Any, folder: Path, prep: Preprocessing, task: Task,
               info: dict[str, Any] | None = None) -> Path:
    """Save a transformers folder with ``dfwe.json``: the task (shape, label order, headline metric), the
    pooling and the preprocessing the model expects, and ``info`` (provenance)."""
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    (folder / INFO_FILE).write_text(json.dumps({**task.describe(), "pooling": model.config.pooling,
                                                "normalize": model.config.normalize, "preprocessing": asdict(prep),
                                                **(info or {})}, indent=2))
    return folder


def model_task(folder: Path) -> tuple[Task, Preprocessing]:
    """The task a dfwe model folder was trained on and the preprocessing it expects (its ``dfwe.json``)."""
    info = read_info(folder)
    if "shape" not in info or "preprocessing" not in info:
        raise BadInput(f"{folder / INFO_FILE}: missing or incomplete; is {folder} a model dfwe wrote?")
    return Task.described(info, folder), Preprocessing(**info["preprocessing"])


def read_info(folder: Path) -> dict[str, Any]:
    """A model folder's ``dfwe.json`` (empty when it has none)."""
    path = folder / INFO_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def load_tokenizer(folder: Path, trust_remote_code: bool = False) -> Any:
    """The tokenizer saved with a model folder."""
    return AutoTokenizer.from_pretrained(str(folder), trust_remote_code=trust_remote_code)
