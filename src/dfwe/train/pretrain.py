"""Masked-LM pretraining of the demo's tiny base on the suite's unlabelled text.

Weight-space ensembling assumes fine-tuned models that share a pretrained starting point; a randomly
initialised tiny model is no such point. A short masked-LM run on the suite's own text makes the demo's
base a real (if small) pretrained language model, as MiniLM is for the real benchmark.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from transformers import BertConfig, BertForMaskedLM, BertModel, get_linear_schedule_with_warmup

from dfwe.progress import progress_bar

_MASK_RATE = 0.15


def pretrain_masked_lm(encoder: BertModel, tokenizer, texts: Sequence[str], steps: int, seed: int,
                       batch_size: int = 64, lr: float = 2e-3, max_length: int = 64) -> BertModel:
    """Train ``encoder`` in place with the masked-LM objective on ``texts`` for ``steps`` steps."""
    torch.manual_seed(seed)
    rng = np.random.default_rng([seed, 0x3A5C])
    mlm = BertForMaskedLM(BertConfig(**{**encoder.config.to_dict(), "tie_word_embeddings": False}))
    mlm.bert = encoder  # the MLM head is a throwaway; only the encoder's weights are kept
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length, padding="max_length",
                        return_tensors="pt")
    ids, attention = encoded["input_ids"], encoded["attention_mask"]
    special = torch.tensor(tokenizer.all_special_ids)
    optimizer = torch.optim.AdamW(mlm.parameters(), lr=lr, weight_decay=0.01)
    schedule = get_linear_schedule_with_warmup(optimizer, steps // 10, steps)
    mlm.train()
    bar = progress_bar(steps, "pretrain tiny base")
    for _ in range(steps):
        rows = torch.as_tensor(rng.choice(len(ids), size=min(batch_size, len(ids)), replace=False))
        width = int(attention[rows].sum(dim=1).max())
        inputs, mask = ids[rows, :width].clone(), attention[rows, :width]
        chosen = torch.as_tensor(rng.random(tuple(inputs.shape)) < _MASK_RATE) & ~torch.isin(inputs, special)
        labels = torch.where(chosen, inputs, torch.full_like(inputs, -100))
        inputs[chosen] = tokenizer.mask_token_id
        loss = mlm(input_ids=inputs, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(mlm.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    encoder.eval()
    return encoder
