"""A model over an encoded set: its outputs, the features its head reads, and a head fitted on those features.

The training loop, the merged model the search scores, the baselines and the final scores all run models
through these three functions.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
import torch
from pydantic import Field

from dfwe.data.encode import EncodedSet, eval_batches, full_batch
from dfwe.data.shapes import TaskShape
from dfwe.modeling import DfwePreTrainedModel

# The inverse L2 strength of a fitted head, as scikit-learn's C: the bound every setting of it shares.
InverseL2 = Annotated[float, Field(gt=0, allow_inf_nan=False)]


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


@torch.no_grad()
def body_features(model: DfwePreTrainedModel, shape: TaskShape, data: EncodedSet, batch_size: int = 64
                  ) -> torch.Tensor:
    """What the head reads for every row of ``data`` (eval mode: no dropout), in row order, padded to full width."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    pieces: list[tuple[torch.Tensor, torch.Tensor]] = []
    try:
        for batch in eval_batches(data, batch_size):
            pieces.append((batch.rows, shape.features(model, batch.to(device)).float()))
    finally:
        model.train(was_training)
    width = data.input_ids.shape[-1]
    sample = pieces[0][1]
    # token features ([rows, L, H]) are padded to the set's width; pooled ones have no token axis
    shape_out = (len(data), width, sample.shape[-1]) if not shape.pooled else (len(data), *sample.shape[1:])
    out = torch.zeros(shape_out, dtype=torch.float32, device=sample.device)
    for rows, piece in pieces:
        rows = rows.to(out.device)
        if shape.pooled:
            out[rows] = piece
        else:
            out[rows, : piece.shape[1]] = piece
    return out


def fit_head(model: DfwePreTrainedModel, shape: TaskShape, train: EncodedSet, c: float = 1.0,
             batch_size: int = 64, max_iter: int = 500) -> None:
    """Fit the head alone on frozen features: full-batch L-BFGS on the shape's probe loss + ||W||^2 / (2 C n).

    For classification this is scikit-learn's ``LogisticRegression(C=c)`` divided by ``C n``, for multilabel its
    one-vs-rest logistic regressions (weights, not biases, are penalised); for every shape the objective is
    convex in the head, so a converged fit is deterministic and independent of where the head started. At most
    ``max_iter`` L-BFGS iterations (a cap below convergence makes the fit depend on its start: deterministic still).
    """
    features = body_features(model, shape, train, batch_size)
    batch = full_batch(train).to(features.device)
    penalised = [p for name, p in model.head.named_parameters() if not name.endswith("bias")]
    optimizer = torch.optim.LBFGS(model.head.parameters(), lr=1.0, max_iter=max_iter, tolerance_grad=1e-7,
                                  tolerance_change=1e-10, history_size=20, line_search_fn="strong_wolfe")
    was_training = model.training
    model.eval()

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = shape.probe_loss(shape.head_logits(model, features, batch), batch.labels)
        loss = loss + sum((p**2).sum() for p in penalised) / (2 * c * len(train))
        loss.backward()
        return loss

    optimizer.step(closure)
    model.train(was_training)
