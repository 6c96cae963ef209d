"""The training loop: the linear probe is scikit-learn's logistic regression; training is seeded; the kept
epoch is the best on dev."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from dfwe.config import TrainConfig
from dfwe.data.encode import encode
from dfwe.data.tasks import load_task
from dfwe.models import load_classifier, load_tokenizer
from dfwe.train.loop import _head_inputs, fine_tune, fit_head, head_module


def _data(task_dir, base):
    task = load_task(task_dir)
    tokenizer = load_tokenizer(base)
    return task, encode(task.splits["train"], tokenizer, task.label_index, 32), \
        encode(task.splits["dev"], tokenizer, task.label_index, 32)


def test_linear_probe_matches_sklearn_logistic_regression(tiny_base, small_task):
    task, train, _ = _data(small_task, tiny_base)
    torch.manual_seed(0)
    model = load_classifier(tiny_base, list(task.labels))
    body_before = {n: p.detach().clone() for n, p in model.named_parameters() if not n.startswith("classifier")}
    fit_head(model, train, c=0.5)
    features = _head_inputs(model, head_module(model), train, 16).numpy()
    reference = LogisticRegression(C=0.5, max_iter=10000, tol=1e-10).fit(features, train.labels.numpy())
    np.testing.assert_allclose(model.classifier.weight.detach().numpy(), reference.coef_, atol=2e-3)
    np.testing.assert_allclose(model.classifier.bias.detach().numpy(), reference.intercept_, atol=2e-3)
    for name, param in model.named_parameters():  # the probe touches the head only
        if name in body_before:
            assert torch.equal(param.detach(), body_before[name]), name


def test_fine_tune_is_seeded_and_keeps_the_best_dev_epoch(tiny_base, small_task):
    task, train, dev = _data(small_task, tiny_base)
    recipe = TrainConfig(lr=5e-3, epochs=4, batch_size=8, select="best", select_metric="loss")
    states, results = [], []
    for _ in range(2):
        torch.manual_seed(0)
        model = load_classifier(tiny_base, list(task.labels))
        results.append(fine_tune(model, train, dev, recipe, seed=3))
        states.append({n: p.detach().clone() for n, p in model.named_parameters()})
    assert [h["train_loss"] for h in results[0].history] == [h["train_loss"] for h in results[1].history]
    for name in states[0]:
        assert torch.equal(states[0][name], states[1][name])
    losses = [h["dev"]["loss"] for h in results[0].history]
    assert results[0].kept_epoch == int(np.argmin(losses)) + 1
    assert results[0].dev["loss"] == min(losses)
    from dfwe.eval.metrics import cross_entropy
    from dfwe.eval.predict import predict_logits

    model.load_state_dict(states[0], strict=False)  # the model was left holding the kept epoch's weights
    assert cross_entropy(predict_logits(model, dev), dev.labels.numpy()) == pytest.approx(min(losses), abs=1e-5)
