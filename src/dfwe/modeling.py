"""dfwe's models: a pretrained encoder (the *body*), the pooling it was pretrained with, and one task head.

Every model dfwe trains, merges and exports has the same two parts, so all of them share one weight space:

* ``body.*`` -- the base's encoder (``AutoModel`` of its architecture), read from the base checkpoint;
* ``head.*`` -- one linear layer whose meaning is the task shape's: class logits over pooled features
  (``classification``, ``multilabel``), one score per (question, choice) encoding (``multiple_choice``), or a
  start and an end logit per token (``span``).

The pooling is the base's own (all-MiniLM-L6-v2 was trained as a *mean*-pooled sentence encoder, so its
untrained CLS pooler is noise; a BERT pretrained with next-sentence prediction keeps its ``pooler``).
:func:`base_pooling` reads it from a sentence-transformers folder (``modules.json``, ``1_Pooling/config.json``).

The classes are ordinary transformers models. dfwe loads them directly; to open a saved folder with the
``Auto`` classes, call :func:`register_auto_classes` once (an explicit call: importing dfwe registers nothing)::

    import dfwe
    from transformers import AutoModelForSequenceClassification

    dfwe.register_auto_classes()
    model = AutoModelForSequenceClassification.from_pretrained("runs/demo/merged")
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMultipleChoice,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    PreTrainedConfig,
    PreTrainedModel,
)
from transformers.configuration_utils import SubConfigSpec
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_outputs import (
    MultipleChoiceModelOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
)

# "first_segment": the mean over the first segment of a text pair ([CLS] text [SEP], read in the context of the
# second), for pair tasks whose question is the first segment: FETA's relation extraction ("Relations of X with
# Y", then the dialogue), where a probe on frozen all-MiniLM-L6-v2 finds 0.293 micro F1 on the official dev split
# against 0.184 for the mean over every token (C = 10; benchmarks/re_probe.py). A tokenizer that marks no
# segments (token types all 0) makes it the plain mean.
POOLINGS = ("mean", "cls", "max", "pooler", "first_segment")


class DfweConfig(PreTrainedConfig):
    """The base encoder's own config plus how dfwe reads it out: pooling, normalisation, the task shape (one of
    :data:`dfwe.data.shapes.SHAPES`, whose entry names the model class)."""

    model_type = "dfwe"
    sub_configs_defaults = {"encoder_config": SubConfigSpec(config_class=AutoConfig, model_type="bert")}

    encoder_config: dict | PreTrainedConfig | None = None
    pooling: str = "mean"
    normalize: bool = False
    shape: str = "classification"
    head_dropout: float = 0.1
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")


def base_pooling(folder: Path) -> tuple[str, bool] | None:
    """``(pooling, normalize)`` declared by a sentence-transformers folder, or None if it declares none."""
    modules_file = folder / "modules.json"
    if not modules_file.is_file():
        return None
    modules = json.loads(modules_file.read_text())
    pooling_dirs = [m.get("path", "") for m in modules if m.get("type", "").endswith("Pooling")]
    normalize = any(m.get("type", "").endswith("Normalize") for m in modules)
    if not pooling_dirs or not (folder / pooling_dirs[0] / "config.json").is_file():
        return None
    declared = json.loads((folder / pooling_dirs[0] / "config.json").read_text())
    for mode, name in (("pooling_mode_mean_tokens", "mean"), ("pooling_mode_cls_token", "cls"),
                       ("pooling_mode_max_tokens", "max")):
        if declared.get(mode):
            return name, normalize
    return None


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str, pooler: nn.Module | None = None,
         token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
    """One vector per sequence from token states ``[n, L, H]``, the attention mask ``[n, L]`` and, for
    ``first_segment``, the token types ``[n, L]`` (0 in the first segment)."""
    if pooling == "first_segment":
        segment = mask if token_type_ids is None else mask * (token_type_ids == 0).to(mask.dtype)
        return pool(hidden, segment, "mean")
    if pooling == "mean":
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
    if pooling == "max":
        return hidden.masked_fill(~mask.bool().unsqueeze(-1), torch.finfo(hidden.dtype).min).max(dim=1).values
    if pooling == "pooler":
        if pooler is None:
            raise ValueError("pooling 'pooler' needs an encoder with a pooler layer")
        return pooler(hidden)
    return hidden[:, 0]


class DfwePreTrainedModel(PreTrainedModel):
    """The shared body and its pooling; subclasses add the head of one task shape."""

    config: DfweConfig
    config_class = DfweConfig
    base_model_prefix = "body"
    _supports_sdpa = True

    def __init__(self, config: DfweConfig):
        super().__init__(config)
        self.body = build_encoder(config.encoder_config, with_pooler=config.pooling == "pooler")

    def _inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None) -> dict[str, torch.Tensor]:
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None and self.config.encoder_config.type_vocab_size > 1:
            inputs["token_type_ids"] = token_type_ids
        return inputs

    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 token_type_ids: torch.Tensor | None = None, pooled: bool = True,
                 states: torch.Tensor | None = None, depth: int = 0) -> torch.Tensor:
        """Pooled features ``[n, H]`` (or, with ``pooled=False``, token states ``[n, L, H]``).

        Given ``states``, what a frozen trunk of ``depth`` layers output for these inputs (see
        :meth:`trunk_states`), only the layers above it run.
        """
        if states is None:
            hidden = self.body(**self._inputs(input_ids, attention_mask, token_type_ids)).last_hidden_state
        else:
            hidden = _top_layers(self.body, states, attention_mask, depth)
        if not pooled:
            return hidden
        features = pool(hidden, attention_mask, self.config.pooling, getattr(self.body, "pooler", None),
                        token_type_ids)
        return nn.functional.normalize(features, dim=-1) if self.config.normalize else features

    def choice_features(self, tokens: torch.Tensor, choice_tokens: torch.Tensor) -> torch.Tensor:
        """Each choice's features ``[n, choices, H]`` from token states ``[n, L, H]``: the mean of the states at
        its mentions (``choice_tokens`` ``[n, choices, L]``); zeros for a padded choice (no mention).

        Not normalised, whatever the base's sentence pooling does: a mean of a few token states is not a sentence
        embedding, and its length carries signal (FETA's reading comprehension, frozen all-MiniLM-L6-v2, a probe
        at C = 10 scored on the official dev split: 0.389 unnormalised, 0.339 normalised; benchmarks/rc_probe.py).
        """
        weights = choice_tokens.to(tokens.dtype)
        return weights @ tokens / weights.sum(dim=-1, keepdim=True).clamp(min=1)

    @torch.no_grad()
    def trunk_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     token_type_ids: torch.Tensor | None, depth: int) -> torch.Tensor:
        """The token states ``[n, L, H]`` after the embeddings and the first ``depth`` encoder layers: what
        :meth:`features` reads as ``states``. The rest of the encoder is not run."""
        stop = self.body.embeddings if depth == 0 else encoder_layers(self.body)[depth - 1]
        captured: list[torch.Tensor] = []

        def capture(module: nn.Module, args: tuple, output: object) -> None:
            captured.append(output[0] if isinstance(output, tuple) else output)
            raise _TrunkDone

        hook = stop.register_forward_hook(capture)
        try:
            self.body(**self._inputs(input_ids, attention_mask, token_type_ids))
        except _TrunkDone:
            pass
        finally:
            hook.remove()
        return captured[0]

    def freeze_trunk(self, depth: int) -> None:
        """Stop gradients into the embeddings and the first ``depth`` encoder layers (see :func:`in_trunk`)."""
        for name, param in self.named_parameters():
            if in_trunk(name, depth):
                param.requires_grad_(False)


class _TrunkDone(Exception):
    """Raised by the hook that has the trunk's output: the layers above it are not needed."""


def encoder_layers(body: nn.Module) -> nn.ModuleList:
    """The encoder's stack of layers (BERT, RoBERTa, MiniLM, ELECTRA: ``encoder.layer``)."""
    layers = getattr(getattr(body, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList):
        raise ValueError(f"{type(body).__name__} keeps no encoder.layer stack to split a frozen trunk off")
    return layers


def _top_layers(body: nn.Module, states: torch.Tensor, attention_mask: torch.Tensor, depth: int) -> torch.Tensor:
    """The encoder layers above ``depth`` run on ``states``, with the attention mask the encoder itself builds."""
    mask = create_bidirectional_mask(config=body.config, inputs_embeds=states, attention_mask=attention_mask)
    for layer in encoder_layers(body)[depth:]:
        output = layer(states, mask)
        states = output[0] if isinstance(output, tuple) else output
    return states


_TRUNK_LAYER = re.compile(r"^encoder\.layer\.(\d+)\.")


def in_trunk(name: str, depth: int | None) -> bool:
    """Whether the tensor ``name`` of a dfwe model (``body.``-prefixed or not) is part of a frozen trunk of
    ``depth`` encoder layers: the embeddings and those layers (``depth`` None: there is no trunk)."""
    if depth is None:
        return False
    bare = name.removeprefix("body.")
    layer = _TRUNK_LAYER.match(bare)
    return bare.startswith("embeddings.") or (layer is not None and int(layer.group(1)) < depth)


def build_encoder(config: PreTrainedConfig, with_pooler: bool) -> PreTrainedModel:
    """The base architecture's bare encoder; its pooler layer only where the pooling reads it."""
    try:
        return AutoModel.from_config(config, add_pooling_layer=with_pooler)
    except TypeError:  # architectures without a pooler take no such argument
        return AutoModel.from_config(config)


class DfweModel(DfwePreTrainedModel):
    """The body alone (a multitask expert's shared encoder); its output is the pooled features."""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, **_: object) -> torch.Tensor:
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        return self.features(input_ids, mask, token_type_ids)


class DfweForSequenceClassification(DfwePreTrainedModel):
    """Classification (softmax over labels) and multilabel (one sigmoid per label) over pooled features."""

    def __init__(self, config: DfweConfig):
        super().__init__(config)
        self.dropout = nn.Dropout(config.head_dropout)
        self.head = nn.Linear(config.encoder_config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                **_: object) -> SequenceClassifierOutput:
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        logits = self.head(self.dropout(self.features(input_ids, mask, token_type_ids)))
        loss = None
        if labels is not None:
            loss = (nn.functional.binary_cross_entropy_with_logits(logits, labels.float())
                    if self.config.shape == "multilabel" else nn.functional.cross_entropy(logits, labels))
        return SequenceClassifierOutput(loss=loss, logits=logits)


class DfweForMultipleChoice(DfwePreTrainedModel):
    """One score per choice, logits ``[n, choices]``, from either encoding of the choices:

    * ``pairs`` (transformers' convention): inputs ``[n, choices, L]``, one (question with the choice, context)
      pair per choice, each pooled;
    * ``mentions``: inputs ``[n, L]``, the question, the choices and the context once, and ``choice_tokens``
      ``[n, choices, L]`` marking the tokens that mention each choice; a choice reads the mean state of its
      mentions (:meth:`choice_features`).
    """

    def __init__(self, config: DfweConfig):
        super().__init__(config)
        self.dropout = nn.Dropout(config.head_dropout)
        self.head = nn.Linear(config.encoder_config.hidden_size, 1)
        self.post_init()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                choice_tokens: torch.Tensor | None = None, **_: object) -> MultipleChoiceModelOutput:
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        if choice_tokens is not None:
            features = self.choice_features(self.features(input_ids, mask, token_type_ids, pooled=False),
                                            choice_tokens)
            real = choice_tokens.any(dim=-1)
        else:
            n, choices, width = input_ids.shape
            flat = [t.reshape(n * choices, width) if t is not None else None for t in (input_ids, mask, token_type_ids)]
            features = self.features(*flat).view(n, choices, -1)
            real = mask.sum(dim=-1) > 0
        logits = self.head(self.dropout(features)).squeeze(-1)
        # padded choices can never be chosen
        logits = logits.masked_fill(~real, torch.finfo(logits.dtype).min)
        loss = None if labels is None else nn.functional.cross_entropy(logits, labels)
        return MultipleChoiceModelOutput(loss=loss, logits=logits)


class DfweForQuestionAnswering(DfwePreTrainedModel):
    """Extractive spans: a start and an end logit for every token."""

    def __init__(self, config: DfweConfig):
        super().__init__(config)
        self.dropout = nn.Dropout(config.head_dropout)
        self.head = nn.Linear(config.encoder_config.hidden_size, 2)
        self.post_init()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, start_positions: torch.Tensor | None = None,
                end_positions: torch.Tensor | None = None, **_: object) -> QuestionAnsweringModelOutput:
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        tokens = self.features(input_ids, mask, token_type_ids, pooled=False)
        logits = self.head(self.dropout(tokens)).masked_fill(~mask.bool().unsqueeze(-1), torch.finfo(tokens.dtype).min)
        start, end = logits.unbind(dim=-1)
        loss = None
        if start_positions is not None and end_positions is not None:
            loss = (nn.functional.cross_entropy(start, start_positions)
                    + nn.functional.cross_entropy(end, end_positions)) / 2
        return QuestionAnsweringModelOutput(loss=loss, start_logits=start, end_logits=end)


def register_auto_classes() -> None:
    """Let transformers' ``Auto`` classes open dfwe folders (``AutoModelForSequenceClassification`` and so on).

    Registration changes transformers' global registry, so it is an explicit call, never done on import.
    """
    AutoConfig.register(DfweConfig.model_type, DfweConfig, exist_ok=True)
    AutoModel.register(DfweConfig, DfweModel, exist_ok=True)
    AutoModelForSequenceClassification.register(DfweConfig, DfweForSequenceClassification, exist_ok=True)
    AutoModelForMultipleChoice.register(DfweConfig, DfweForMultipleChoice, exist_ok=True)
    AutoModelForQuestionAnswering.register(DfweConfig, DfweForQuestionAnswering, exist_ok=True)
