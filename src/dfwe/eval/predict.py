"""Running a model over an encoded set, and a cache of the outputs of fixed merges."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from dfwe.data.encode import EncodedSet, eval_batches
from dfwe.io import atomic_write_bytes
from dfwe.modeling import DfwePreTrainedModel
from dfwe.shapes.base import TaskShape


@torch.inference_mode()
def predict_logits(model: DfwePreTrainedModel, shape: TaskShape, data: EncodedSet, batch_size: int = 64) -> np.ndarray:
    """The shape's output for every row (float32, in the set's row order), padded with ``-inf``.

    Rows of different lengths give outputs of different widths (span logits per token): the array is as wide
    as the widest, and shorter rows are padded with ``-inf`` so that no softmax ever puts mass there.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    pieces = [(batch.rows, shape.logits(model, batch.to(device)).float().cpu()) for batch in eval_batches(data, batch_size)]
    model.train(was_training)
    width = max(piece.shape[-1] for _, piece in pieces)
    out = torch.full((len(data), *pieces[0][1].shape[1:-1], width), float("-inf"), dtype=torch.float32)
    for rows, piece in pieces:
        # the dtype's minimum marks padding inside the model (finite, so it survives the maths there)
        out[rows, ..., : piece.shape[-1]] = piece.masked_fill(piece <= torch.finfo(piece.dtype).min, float("-inf"))
    return out.numpy()


def cached_logits(cache_dir: Path, key: dict[str, Any], compute: Callable[[], np.ndarray]) -> np.ndarray:
    """``compute()``, or what it returned before for the same ``key``.

    ``key`` must name everything the logits depend on by content (the checkpoints' content keys, the merge
    weights, the example set's digest); runs that share them then score each baseline once.
    """
    path = cache_dir / (hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20] + ".npy")
    if path.is_file():
        return np.load(path, allow_pickle=False)
    logits = compute()
    buffer = io.BytesIO()
    np.save(buffer, logits, allow_pickle=False)
    atomic_write_bytes(path, buffer.getvalue())
    return logits
