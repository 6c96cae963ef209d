"""Running a classifier over an encoded set."""

from __future__ import annotations

import numpy as np
import torch
from transformers import PreTrainedModel

from dfwe.data.encode import EncodedSet, eval_batches


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
