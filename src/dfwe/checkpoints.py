"""Building, loading and saving models: dfwe's own (see :mod:`dfwe.modeling`) and plain transformers checkpoints.

Every checkpoint dfwe writes is a transformers folder in safetensors (``config.json``, ``model.safetensors``,
tokenizer files) plus ``dfwe.json``: the task shape, the label order, the pooling and the preprocessing
(max length, context turns, window stride) the model was trained with, so that whoever scores it later
prepares inputs the same way.

A plain transformers ``*ForSequenceClassification`` (labels from ``id2label``, multilabel when its
``problem_type`` says so), ``*ForQuestionAnswering`` (span) or ``*ForMultipleChoice`` checkpoint loads as
:class:`PlainModel`, which the task shapes, the weight space and the search use as they use dfwe's models; its
preprocessing is :class:`~dfwe.data.encode.Preprocessing`'s defaults unless the command's flags say otherwise.

Only safetensors weights are read: nothing is ever unpickled, and no remote code runs unless asked for.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, Literal, Sequence

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from transformers import AutoConfig, AutoTokenizer, PreTrainedConfig, PreTrainedModel

from dfwe.data.encode import ChoiceEncoding, ContextTurns, MaxLength, Preprocessing, Stride
from dfwe.data.records import Task
from dfwe.data.shapes import SHAPES, TaskShape, get_shape
from dfwe.errors import BadInput
from dfwe.io import read_json
from dfwe.modeling import DfweConfig, DfweModel, DfwePreTrainedModel, base_pooling
from dfwe.schema import validated

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
        listing = read_json(index)
        weight_map = listing.get("weight_map") if isinstance(listing, dict) else None
        if not isinstance(weight_map, dict):
            raise BadInput(f"{index}: no 'weight_map' of tensor names to shard files")
        return [path / shard for shard in sorted(set(weight_map.values()))]
    if (path / "model.safetensors").is_file():
        return [path / "model.safetensors"]
    pickled = sorted(p.name for p in path.glob("*.bin")) + sorted(p.name for p in path.glob("*.pt*"))
    found = f" (found {', '.join(pickled)}: pickle files, never loaded)" if pickled else ""
    raise BadInput(f"{path}: no model.safetensors in this folder{found}; dfwe reads safetensors checkpoints only "
                   "(convert with transformers: model.save_pretrained(folder, safe_serialization=True))")


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
    raw = read_model_config(base)
    if raw.get("model_type") == DfweConfig.model_type:
        return _dfwe_config(base).encoder_config
    try:
        return AutoConfig.from_pretrained(str(base), trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise BadInput(f"{base / 'config.json'}: cannot read it as a transformers config "
                       f"({str(error).splitlines()[0] if str(error) else type(error).__name__})") from None


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


def read_model_config(folder: Path) -> dict[str, Any]:
    """A model folder's ``config.json`` as a dict; a folder without one, or one that is not a JSON object naming
    its ``model_type``, is bad input."""
    path = folder / "config.json"
    if not folder.is_dir():
        raise BadInput(f"{folder}: model folder not found")
    if not path.is_file():
        raise BadInput(f"{folder}: not a model folder (config.json missing)")
    raw = read_json(path)
    if not isinstance(raw, dict) or not isinstance(raw.get("model_type"), str):
        raise BadInput(f"{path}: not a transformers config (a JSON object with a 'model_type')")
    return raw


def _dfwe_config(folder: Path) -> DfweConfig:
    try:
        return DfweConfig.from_pretrained(str(folder))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise BadInput(f"{folder / 'config.json'}: not a readable dfwe config "
                       f"({str(error).splitlines()[0] if str(error) else type(error).__name__})") from None


def is_dfwe_model(folder: Path) -> bool:
    """Whether ``folder`` holds one of dfwe's own model classes (else: a plain transformers checkpoint)."""
    return read_model_config(folder)["model_type"] == DfweConfig.model_type


class _HeadReached(Exception):
    """Raised by the hook that has captured a head's input: the rest of the forward is not needed."""


class PlainModel(nn.Module):
    """A plain transformers task model seen through dfwe's model interface.

    ``features`` are what the model's head module (``classifier`` or ``qa_outputs``) receives in the model's own
    forward, captured by a hook that stops the forward there; ``head`` is that module, and ``dropout`` is the
    identity (the forward applied the model's own before the head). Its parameter names are the wrapped
    model's, which are its checkpoint's tensor names, so a weight space binds it as it binds dfwe's models.
    """

    def __init__(self, model: PreTrainedModel, head: str):
        super().__init__()
        self.model, self.head_name = model, head
        self.dropout = nn.Identity()

    @property
    def head(self) -> nn.Module:
        return self.model.get_submodule(self.head_name)

    @property
    def config(self) -> PreTrainedConfig:
        return self.model.config

    def named_parameters(self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True):
        return self.model.named_parameters(prefix, recurse, remove_duplicate)

    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 token_type_ids: torch.Tensor | None = None, pooled: bool = True) -> torch.Tensor:
        """The head's input ``[n, H]`` (a sequence head's: its first token ``[n, 1, H]``), or with ``pooled=False``
        the token states ``[n, L, H]``."""
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None and getattr(self.config, "type_vocab_size", 0) > 1:
            inputs["token_type_ids"] = token_type_ids
        captured: list[torch.Tensor] = []

        def capture(module: nn.Module, args: tuple) -> None:
            captured.append(args[0])
            raise _HeadReached

        hook = self.head.register_forward_pre_hook(capture)
        try:
            self.model(**inputs)
        except _HeadReached:
            pass
        finally:
            hook.remove()
        features = captured[0]
        # a sequence head (RoBERTa's, ELECTRA's) reads the token states and takes their first token itself
        return features[:, :1] if pooled and features.ndim == 3 else features


TaskModel = DfwePreTrainedModel | PlainModel
_HEADS = ("classifier", "qa_outputs")  # where encoder task models keep the layer that makes their logits


def plain_shape(raw: dict[str, Any], folder: Path) -> TaskShape:
    """The task shape of a plain checkpoint, from its ``architectures`` (and ``problem_type``)."""
    architecture = (raw.get("architectures") or [""])[0]
    for shape in SHAPES.values():
        if architecture.endswith(shape.auto_class.__name__.removeprefix("AutoModel")):
            multilabel = raw.get("problem_type") == "multi_label_classification"
            return SHAPES["multilabel"] if shape.name == "classification" and multilabel else shape
    kinds = sorted({s.auto_class.__name__.removeprefix("AutoModel") for s in SHAPES.values()})
    raise BadInput(f"{folder / 'config.json'}: architecture {architecture or '(none)'!r} is not a task model dfwe "
                   f"scores; give a *{', *'.join(kinds)} checkpoint, or one dfwe trained")


def load_model(folder: Path, trust_remote_code: bool = False) -> TaskModel:
    """A model folder as dfwe's class of its task shape, or (a plain transformers checkpoint) a :class:`PlainModel`.

    The weights must be safetensors: a folder with only pickle files (``pytorch_model.bin``) is refused before
    anything is loaded.
    """
    raw = read_model_config(folder)
    weight_files(folder)
    try:
        if raw["model_type"] == DfweConfig.model_type:
            config = _dfwe_config(folder)
            plain_body = (raw.get("architectures") or [""])[0] == DfweModel.__name__
            cls = DfweModel if plain_body else get_shape(config.shape).model_class
            return cls.from_pretrained(str(folder), dtype=torch.float32, use_safetensors=True)
        model = plain_shape(raw, folder).auto_class.from_pretrained(
            str(folder), dtype=torch.float32, use_safetensors=True, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise BadInput(f"{folder}: cannot load the model ({str(error).splitlines()[0]})") from None
    if plain_shape(raw, folder).name == "span" and model.config.num_labels != 2:
        raise BadInput(f"{folder / 'config.json'}: a question answering model has a start and an end logit per "
                       f"token (num_labels 2), this one {model.config.num_labels}")
    head = next((name for name in _HEADS if isinstance(getattr(model, name, None), nn.Module)), None)
    if head is None:
        raise BadInput(f"{folder}: {type(model).__name__} has no {' or '.join(_HEADS)} head module; dfwe reads "
                       "encoder task models (BERT, RoBERTa, DistilBERT, ELECTRA, ...)")
    return PlainModel(model.eval(), head)


def save_model(model: TaskModel, tokenizer: Any, folder: Path, prep: Preprocessing, task: Task,
               info: dict[str, Any] | None = None) -> Path:
    """Save a transformers folder (a plain model as its own class) with ``dfwe.json``: the task (shape, label
    order, headline metric), the pooling and the preprocessing the model expects, and ``info`` (provenance)."""
    folder.mkdir(parents=True, exist_ok=True)
    (model.model if isinstance(model, PlainModel) else model).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    pooling = ({} if isinstance(model, PlainModel) else
               {"pooling": model.config.pooling, "normalize": model.config.normalize})
    (folder / INFO_FILE).write_text(json.dumps({**task.describe(), **pooling, "preprocessing": asdict(prep),
                                                **(info or {})}, indent=2))
    return folder


class PreprocessingInfo(BaseModel):
    """The preprocessing a model records in its ``dfwe.json``, within the shared bounds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_length: MaxLength
    context_turns: ContextTurns
    stride: Stride
    choices: ChoiceEncoding = "pairs"  # multiple choice; folders written before it existed encode pairs


class ModelInfo(BaseModel):
    """A model folder's ``dfwe.json``: the task it was trained for and how its inputs are prepared. Other keys
    record its provenance (the expert, the ingredients and weights of a merge) and are kept as they are."""

    model_config = ConfigDict(frozen=True, extra="allow", allow_inf_nan=False)

    task: str
    shape: Literal[tuple(SHAPES)]  # type: ignore[valid-type]
    labels: list[Annotated[str, Field(min_length=1)]]
    metric: str
    ignore_labels: list[str] = []
    preprocessing: PreprocessingInfo
    pooling: str | None = None  # dfwe's own models: how the body's token states become one vector
    normalize: bool | None = None

    @field_validator("labels")
    @classmethod
    def _each_label_once(cls, labels: list[str]) -> list[str]:
        repeated = [label for i, label in enumerate(labels) if label in labels[:i]]
        if repeated:
            raise ValueError(f"label '{repeated[0]}' is listed twice")
        return labels


def read_info(folder: Path) -> dict[str, Any]:
    """A model folder's ``dfwe.json`` (empty when it has none); one that is not valid is bad input naming it."""
    path = folder / INFO_FILE
    if not path.is_file():
        return {}
    raw = read_json(path)
    if not isinstance(raw, dict):
        raise BadInput(f"{path}: expected a JSON object (the task, labels and preprocessing of the model)")
    validated(ModelInfo, raw, str(path))
    return raw


def model_task(folder: Path) -> tuple[Task, Preprocessing]:
    """The task a model folder was trained for and the preprocessing it expects: its ``dfwe.json``, or for a
    plain transformers checkpoint without one, what its ``config.json`` says (labels from ``id2label``) and
    :class:`~dfwe.data.encode.Preprocessing`'s defaults."""
    info = read_info(folder)
    if info:
        return Task.described(info, folder), Preprocessing(**info["preprocessing"])
    raw = read_model_config(folder)
    if raw["model_type"] == DfweConfig.model_type:
        raise BadInput(f"{folder / INFO_FILE}: missing; a dfwe model folder records its task and preprocessing "
                       "there (is it a folder dfwe wrote, copied whole?)")
    shape = plain_shape(raw, folder)
    labels: tuple[str, ...] = ()
    if shape.name in ("classification", "multilabel"):
        id2label = raw.get("id2label") or {}
        try:
            labels = tuple(str(id2label[key]) for key in sorted(id2label, key=int))
        except ValueError:
            raise BadInput(f"{folder / 'config.json'}: id2label keys must be class indices, got {list(id2label)}") from None
        if len(set(labels)) != len(labels) or len(labels) < 2:
            raise BadInput(f"{folder / 'config.json'}: id2label must name two or more distinct labels, got {labels}")
    metric = "weighted_f1" if shape.name == "classification" else shape.metrics[0]
    task = Task(name=folder.name, path=folder, shape=shape.name, labels=labels, metric=metric, splits={})
    return task, Preprocessing()


def check_one_task(folders: Sequence[Path]) -> None:
    """Bad input unless every model folder is of one architecture and one task (shape and labels, in order):
    weights averaged across other label sets would mix classes that mean different things."""
    first, (first_task, _) = folders[0], model_task(folders[0])
    first_kind = _kind(read_model_config(first))
    for folder in folders[1:]:
        kind = _kind(read_model_config(folder))
        if kind != first_kind:
            raise BadInput(f"{folder}: a {kind[1] or kind[0]} checkpoint, but {first} is a {first_kind[1] or first_kind[0]}; "
                           "merge checkpoints of one architecture")
        task, _ = model_task(folder)
        if (task.shape, task.labels) != (first_task.shape, first_task.labels):
            raise BadInput(f"{folder}: its task is {task.shape} with labels ({', '.join(task.labels)}), {first}'s is "
                           f"{first_task.shape} with labels ({', '.join(first_task.labels)}); merge checkpoints of "
                           "one task, their labels in one order")


def _kind(raw: dict[str, Any]) -> tuple[str, str]:
    return raw["model_type"], (raw.get("architectures") or [""])[0]


def save_tensors_like(template: Path, tensors: dict[str, torch.Tensor], out: Path,
                      info: dict[str, Any] | None = None) -> None:
    """Write ``tensors`` as ``out``'s ``model.safetensors`` in the layout of the checkpoint ``template``: every
    other file of a template folder (config, tokenizer) is copied, and its tensors that ``tensors`` lacks (integer
    buffers) are taken from it, so the folder opens as the template's own class. A template's ``dfwe.json`` gives
    the task, pooling and preprocessing (not its provenance), with ``info`` added."""
    out.mkdir(parents=True, exist_ok=True)
    weights = set(weight_files(template))
    if template.is_dir():
        for item in sorted(template.iterdir()):
            skipped = item in weights or item.name in ("model.safetensors.index.json", INFO_FILE)
            if skipped or item.suffix in (".bin", ".pt", ".pth", ".ckpt") or item.name.startswith("."):
                continue
            (shutil.copytree if item.is_dir() else shutil.copy2)(item, out / item.name)
    full = {name: tensors[name] if name in tensors else tensor for name, tensor in read_tensors(template).items()}
    save_file({name: tensor.detach().cpu().contiguous() for name, tensor in full.items()},
              str(out / "model.safetensors"), metadata={"format": "pt"})
    if template.is_dir() and (template / INFO_FILE).is_file():
        described = {key: value for key, value in read_info(template).items() if key in ModelInfo.model_fields}
        (out / INFO_FILE).write_text(json.dumps({**described, **(info or {})}, indent=2))


def load_tokenizer(folder: Path, trust_remote_code: bool = False) -> Any:
    """The tokenizer saved with a model folder."""
    try:
        return AutoTokenizer.from_pretrained(str(folder), trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise BadInput(f"{folder}: cannot load its tokenizer ({str(error).splitlines()[0]}); a model folder "
                       "needs the tokenizer files it was trained with") from None
