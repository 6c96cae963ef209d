"""The one fine-tuning loop: source experts and target fine-tunes both go through :func:`fine_tune`.

AdamW (no decay on biases and LayerNorm), linear warm-up then linear decay, gradient clipping, seeded
shuffling and dropout, a progress bar, and selection of the epoch with the best score on the given dev
set (dev only: the loop never sees test data).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import PreTrainedModel, get_linear_schedule_with_warmup

from dfwe.config import TrainConfig
from dfwe.data.encode import EncodedSet, eval_batches, train_batches
from dfwe.eval.metrics import LOWER_IS_BETTER, score_logits
from dfwe.eval.predict import predict_logits
from dfwe.progress import progress_bar


@dataclass
class TrainResult:
    """What one fine-tune did: per-epoch history and the epoch it kept."""

    kept_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def dev(self) -> dict[str, float] | None:
        kept = [record for record in self.history if record["epoch"] == self.kept_epoch]
        return kept[0].get("dev") if kept else None


def _param_groups(model: PreTrainedModel, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (no_decay if param.ndim < 2 or "LayerNorm" in name or "layer_norm" in name else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _is_better(metric: str, new: float, old: float | None) -> bool:
    if old is None:
        return True
    return new < old if metric in LOWER_IS_BETTER else new > old


def head_module(model: PreTrainedModel) -> torch.nn.Module:
    """The module that maps features to logits (``classifier`` in BERT, RoBERTa, DistilBERT, ...)."""
    for name in ("classifier", "score"):
        if isinstance(getattr(model, name, None), torch.nn.Module):
            return getattr(model, name)
    raise ValueError(f"{type(model).__name__} has no classifier/score head to probe")


@torch.no_grad()
def _head_inputs(model: PreTrainedModel, head: torch.nn.Module, data: EncodedSet, batch_size: int) -> torch.Tensor:
    """What the head receives for every example of ``data`` (model in eval mode: no dropout)."""
    captured: list[torch.Tensor] = []
    hook = head.register_forward_hook(lambda module, args, output: captured.append(args[0].detach()))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    rows = []
    try:
        for batch in eval_batches(data, batch_size):
            batch = batch.to(device)
            model(**batch.model_inputs())
            rows.append(batch.rows)
    finally:
        hook.remove()
        model.train(was_training)
    # sequence heads (RoBERTa's) read only the first token: keep just that one, in the shape the head takes
    features = torch.cat([c if c.ndim == 2 else c[:, :1] for c in captured])
    out = torch.empty_like(features)
    out[torch.cat(rows)] = features
    return out


def fit_head(model: PreTrainedModel, train: EncodedSet, c: float = 1.0, batch_size: int = 64) -> None:
    """Fit the head alone on frozen features: full-batch L-BFGS on cross-entropy + ||W||^2 / (2 C n).

    The objective is scikit-learn's ``LogisticRegression(C=c)`` divided by ``C n`` (weights, not biases,
    are penalised), so the fit is deterministic and independent of batch order.
    """
    head = head_module(model)
    features = _head_inputs(model, head, train, batch_size)
    labels = train.labels.to(features.device)
    penalised = [p for name, p in head.named_parameters() if not name.endswith("bias")]
    optimizer = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=500, tolerance_grad=1e-7,
                                  tolerance_change=1e-10, history_size=20, line_search_fn="strong_wolfe")
    was_training = head.training
    head.eval()

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        logits = head(features)
        loss = torch.nn.functional.cross_entropy(logits.float(), labels)
        loss = loss + sum((p**2).sum() for p in penalised) / (2 * c * len(labels))
        loss.backward()
        return loss

    optimizer.step(closure)
    head.train(was_training)


def fine_tune(model: PreTrainedModel, train: EncodedSet, dev: EncodedSet | None, recipe: TrainConfig, seed: int,
              desc: str = "train") -> TrainResult:
    """Fine-tune ``model`` in place on ``train``; keep the best epoch on ``dev`` when ``recipe.select == 'best'``.

    A multitask set (see :func:`dfwe.data.encode.multitask`) restricts each example's softmax to its own
    task's labels, which is how one model trains on several source tasks at once.
    """
    device = next(model.parameters()).device
    rng = np.random.default_rng([seed, 0x7A1])
    torch.manual_seed(seed)
    if recipe.linear_probe:
        fit_head(model, train, recipe.probe_c)
    if recipe.epochs == 0:
        record: dict = {"epoch": 0, "train_loss": float("nan")}
        if dev is not None:
            record["dev"] = score_logits(predict_logits(model, dev), dev.labels.numpy(), model.config.num_labels)
        model.eval()
        return TrainResult(kept_epoch=0, history=[record])
    steps_per_epoch = math.ceil(len(train) / recipe.batch_size)
    total_steps = steps_per_epoch * recipe.epochs
    optimizer = torch.optim.AdamW(_param_groups(model, recipe.weight_decay), lr=recipe.lr,
                                  fused=device.type == "cuda")  # one kernel per step on a GPU
    schedule = get_linear_schedule_with_warmup(optimizer, int(recipe.warmup_ratio * total_steps), total_steps)

    result = TrainResult(kept_epoch=recipe.epochs)
    best_score, best_state = None, None
    bar = progress_bar(total_steps, desc)
    for epoch in range(1, recipe.epochs + 1):
        model.train()
        losses = []
        for batch in train_batches(train, recipe.batch_size, rng):
            batch = batch.to(device)
            logits = batch.restrict(model(**batch.model_inputs()).logits.float())
            loss = torch.nn.functional.cross_entropy(logits, batch.labels)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.max_grad_norm)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{np.mean(losses[-20:]):.3f}")
        record: dict = {"epoch": epoch, "train_loss": float(np.mean(losses))}
        if dev is not None:
            record["dev"] = score_logits(predict_logits(model, dev), dev.labels.numpy(), model.config.num_labels)
        result.history.append(record)
        if dev is not None and recipe.select == "best":
            score = record["dev"][recipe.select_metric]
            if _is_better(recipe.select_metric, score, best_score):
                best_score, result.kept_epoch = score, epoch
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            elif recipe.patience is not None and epoch - result.kept_epoch >= recipe.patience:
                break
    bar.close()
    if best_state is not None and result.kept_epoch != len(result.history):
        model.load_state_dict(best_state)
    elif recipe.select == "last":
        result.kept_epoch = len(result.history)
    model.eval()
    return result
