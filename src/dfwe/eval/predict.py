"""Running a classifier over an encoded set."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from transformers import PreTrainedModel

from dfwe.data.encode import EncodedSet, eval_batches
from dfwe.io import atomic_write_bytes


@torch.inference_mode()
def predict_logits(model: PreTrainedModel, data: EncodedSet, batch_size: int = 64) -> np.ndarray:
    """Logits ``[n, num_labels]`` (float32, in the set's row order) on the model's own device."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = torch.empty((len(data), model.config.num_labels), dtype=torch.float32, device=device)
    for batch in eval_batches(data, batch_size):
        batch = batch.to(device)
        out[batch.rows] = batch.restrict(model(**batch.model_inputs()).logits.float())
    model.train(was_training)
    return out.cpu().numpy()


def cached_logits(cache_dir: Path, key: dict[str, Any], compute: Callable[[], np.ndarray]) -> np.ndarray:
    """``compute()``, or what it returned before for the same ``key``.

    The logits of a fixed merge of fixed checkpoints on a fixed example set never change, so runs that share
    ingredients (options that differ only in their search) score each baseline once. ``key`` must name
    everything the logits depend on besides the checkpoints, whose own cache folder ``cache_dir`` is.
    """
    path = cache_dir / (hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20] + ".npy")
    if path.is_file():
        return np.load(path, allow_pickle=False)
    logits = compute()
    buffer = io.BytesIO()
    np.save(buffer, logits, allow_pickle=False)
    atomic_write_bytes(path, buffer.getvalue())
    return logits
