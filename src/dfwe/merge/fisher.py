"""Fisher-weighted merging (Matena and Raffel, 2022): each parameter is averaged in proportion to how much each
ingredient's own loss depends on it.

    merge(w) = sum_i w_i F_i theta_i / sum_i w_i F_i        (elementwise, per parameter)

``F_i`` is ingredient ``i``'s diagonal Fisher on the examples it was fine-tuned on (the target's few-sample train
set), with its own head at its own weights: the mean over rows of the squared gradient of the loss of a target drawn
from its own prediction (:func:`squared_gradients`, seeded). No label and no dev data enters it, so dev stays the
search's alone. Where one ingredient's loss is sensitive to a parameter and another's is not, the merge keeps the
first one's value; a linear merge averages them whatever they mean.

Each ``F_i`` is scaled to mean 1 over the space before a small floor is added (:func:`fisher_rows`): the weights
``w`` then say how much each ingredient counts overall and the Fisher only where, and a parameter no ingredient's loss
depends on is the ``w``-weighted average. At one-hot weights the merge is that ingredient; if every ingredient has
the same Fisher it is the linear merge.
"""

from __future__ import annotations

import torch

from dfwe.data.encode import EncodedSet, eval_batches
from dfwe.data.shapes import TaskShape
from dfwe.errors import BadInput

# added to every scaled Fisher entry (each ingredient's mean is 1): keeps the merge's denominator positive where no
# ingredient's loss depends on a parameter, and is far below any entry that carries information
FISHER_FLOOR = 1e-6


def squared_gradients(model: torch.nn.Module, names: list[str], shape: TaskShape, data: EncodedSet,
                      generator: torch.Generator) -> torch.Tensor:
    """Each named parameter's diagonal Fisher on ``data``, flat and in the order of ``names``: the mean over rows of
    the squared gradient of the loss of a target drawn from the model's own prediction for the row (eval mode: no
    dropout), a one-sample estimate of the expectation over its predictive distribution. Not the rows' true labels:
    an ingredient fits its own train set, where the gradients of the true labels' loss are what it has not learnt
    (near zero), not how sharply its loss depends on each parameter. A parameter that does not train
    (``requires_grad`` off) gets zeros."""
    params = dict(model.named_parameters())
    trained = [name for name in names if params[name].requires_grad]
    total = {name: torch.zeros(params[name].numel(), dtype=torch.float32, device=params[name].device) for name in names}
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        for batch in eval_batches(data, 1):  # one row at a time: the Fisher squares each example's gradient
            logits = shape.logits(model, batch.to(device))
            drawn = shape.sample_labels(logits.cpu(), generator).to(device)
            grads = torch.autograd.grad(shape.loss(logits, drawn), [params[name] for name in trained],
                                        allow_unused=True)
            for name, grad in zip(trained, grads):
                if grad is not None:
                    total[name] += grad.detach().reshape(-1).float() ** 2
    finally:
        model.train(was_training)
    return torch.cat([total[name] for name in names]) / len(data)


def fisher_rows(fisher: torch.Tensor) -> torch.Tensor:
    """Raw diagonal Fishers ``[ingredients, parameters]`` as the merge weighs them: each row scaled to mean 1, plus
    :data:`FISHER_FLOOR`. Bad input if a row holds NaN, Inf or negative values."""
    if not torch.isfinite(fisher).all() or (fisher < 0).any():
        raise BadInput("the Fisher information holds NaN, Inf or negative values: an ingredient's training loss "
                       "is not finite on its train set; check the ingredients, or search another space")
    scale = fisher.mean(dim=1, keepdim=True)
    return torch.where(scale > 0, fisher / scale.clamp_min(torch.finfo(torch.float32).tiny), 1.0) + FISHER_FLOOR


def fisher_merge(weights: torch.Tensor, fisher: torch.Tensor, weighted: torch.Tensor) -> torch.Tensor:
    """``sum_i w_i F_i theta_i / sum_i w_i F_i`` for one group's weights ``[1, ingredients]`` over columns of
    ``fisher`` (``F``) and ``weighted`` (``F * theta``), both ``[ingredients, columns]``."""
    return (weights @ weighted) / (weights @ fisher)


def check_fisher_weights(weights: torch.Tensor) -> None:
    """Bad input unless every group's weights (``[groups, ingredients]``) are non-negative with a positive sum (the
    merge divides by a weighted sum of Fishers, which negative weights could bring to zero)."""
    if (weights < 0).any() or not (weights.sum(dim=-1) > 0).all():
        raise BadInput("fisher merging takes non-negative weights with a positive sum in every group (got "
                       f"{weights.round(decimals=4).tolist()}); search the 'fisher' space, which keeps them on the "
                       "simplex")


__all__ = ["FISHER_FLOOR", "check_fisher_weights", "fisher_merge", "fisher_rows", "squared_gradients"]
