"""The training loop: the linear probe is scikit-learn's logistic regression; training is seeded; the kept
epoch is the best on dev; a frozen head stays put; several tasks train one shared body and a head each."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import WORDS, friends_rows, tiny_model, write_task
from sklearn.linear_model import LogisticRegression

from dfwe.checkpoints import load_tokenizer
from dfwe.data.encode import Preprocessing
from dfwe.data.sets import ExampleSet
from dfwe.data.shapes import get_shape
from dfwe.data.tasks import load_task
from dfwe.forward import body_features, fit_head, predict_logits
from dfwe.train.loop import TrainConfig, fine_tune

SHAPE = get_shape("classification")
PREP = Preprocessing(max_length=32)


def _sets(task_dir: Path, base: Path) -> tuple[ExampleSet, ExampleSet]:
    task = load_task(task_dir)
    tokenizer = load_tokenizer(base)
    return tuple(ExampleSet(task, task.splits[s], SHAPE.encode(task.splits[s], tokenizer, task, PREP))
                 for s in ("train", "dev"))


def _ragged_task(folder: Path) -> Path:
    """Utterances of 1 to 7 words, lengths cycling independently of the labels, so that batching rows by
    length reorders them across labels."""
    labels = ["neg", "neu", "pos"]
    rows = [{"id": f"r{i}", "speaker": "Ross", "label": labels[i % 3], "context": ["Rachel: hi"] if i % 2 else [],
             "utterance": " ".join(WORDS[(i * 3 + j + (i % 3)) % len(WORDS)] for j in range(1 + i % 7))}
            for i in range(42)]
    return write_task(folder, {"train": rows, "dev": rows[:9], "test": rows[:9]})


def _params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.named_parameters()}


def test_linear_probe_matches_sklearn_logistic_regression(tiny_base, tmp_path):
    train, _ = _sets(_ragged_task(tmp_path / "ragged"), tiny_base)
    encoded = train.encoded
    assert len(set(encoded.lengths.tolist())) > 3  # rows of different lengths: batches reorder them
    model = tiny_model(tiny_base, seed=0)
    body_before = _params(model.body)
    fit_head(model, SHAPE, encoded, c=0.5)

    # the features the head reads, row by row and unpadded: body_features must give them in row order
    model.eval()
    with torch.no_grad():
        reference_features = torch.cat([
            model.features(encoded.input_ids[i:i + 1, :n], torch.ones(1, n, dtype=torch.long),
                           encoded.token_type_ids[i:i + 1, :n])
            for i, n in enumerate(encoded.lengths.tolist())]).numpy()
    batched = body_features(model, SHAPE, encoded, batch_size=8).numpy()
    np.testing.assert_allclose(batched, reference_features, atol=1e-5)

    reference = LogisticRegression(C=0.5, max_iter=10000, tol=1e-10).fit(reference_features, encoded.labels.numpy())
    np.testing.assert_allclose(model.head.weight.detach().numpy(), reference.coef_, atol=2e-3)
    np.testing.assert_allclose(model.head.bias.detach().numpy(), reference.intercept_, atol=2e-3)
    for name, param in model.body.named_parameters():  # the probe touches the head only
        assert torch.equal(param.detach(), body_before[name]), name


def test_a_capped_head_fit_stops_after_its_iterations_and_a_cap_above_convergence_changes_nothing(tiny_base, tmp_path):
    train, _ = _sets(_ragged_task(tmp_path / "ragged"), tiny_base)
    heads, evaluations = {}, {}
    for cap in (500, 100, 2):
        model = tiny_model(tiny_base, seed=0)
        calls = []
        model.head.register_forward_hook(lambda *_: calls.append(1))
        fit_head(model, SHAPE, train.encoded, c=0.5, max_iter=cap)
        heads[cap], evaluations[cap] = _params(model.head), len(calls)
    assert 4 < evaluations[500] < 100  # converged well inside both caps
    assert all(torch.equal(heads[100][n], heads[500][n]) for n in heads[500])
    assert evaluations[2] <= 3 and not torch.equal(heads[2]["weight"], heads[500]["weight"])


def test_fine_tune_is_seeded_and_keeps_the_best_dev_epoch(tiny_base, small_task):
    train, dev = _sets(small_task, tiny_base)
    name = train.task.name
    recipe = TrainConfig(lr=5e-3, epochs=4, batch_size=8, select="best", select_metric="loss")
    states, results = [], []
    for _ in range(2):
        model = tiny_model(tiny_base, seed=0)
        results.append(fine_tune({name: model}, {name: train}, {name: dev}, recipe, seed=3))
        states.append(_params(model))
    assert [h["train_loss"] for h in results[0].history] == [h["train_loss"] for h in results[1].history]
    for param_name in states[0]:
        assert torch.equal(states[0][param_name], states[1][param_name]), param_name
    assert [h["epoch"] for h in results[0].history] == [1, 2, 3, 4]
    assert all(set(h["dev"]) == {name} for h in results[0].history)
    losses = [h["dev"][name]["loss"] for h in results[0].history]
    assert results[0].kept_epoch == int(np.argmin(losses)) + 1
    assert results[0].dev[name]["loss"] == min(losses)

    model.load_state_dict(states[0], strict=False)  # the model was left holding the kept epoch's weights
    assert SHAPE.nll(predict_logits(model, SHAPE, dev.encoded), dev.encoded) == pytest.approx(min(losses), abs=1e-5)


def test_frozen_head_stays_put_while_the_body_trains(tiny_base, small_task):
    train, dev = _sets(small_task, tiny_base)
    name = train.task.name
    model = tiny_model(tiny_base, seed=0)
    head_before, body_before = _params(model.head), _params(model.body)
    recipe = TrainConfig(lr=5e-3, epochs=2, batch_size=8, select="last", freeze_head=True)
    fine_tune({name: model}, {name: train}, {name: dev}, recipe, seed=3)
    for param_name, param in model.head.named_parameters():
        assert torch.equal(param.detach(), head_before[param_name]), param_name
    changed = [n for n, p in model.body.named_parameters() if not torch.equal(p.detach(), body_before[n])]
    assert "encoder.layer.0.attention.self.query.weight" in changed and "embeddings.word_embeddings.weight" in changed
    assert all(p.requires_grad for p in model.head.parameters())  # frozen for the fine-tune only


def test_multitask_fine_tune_trains_one_body_and_a_head_per_task(tiny_base, small_task, tmp_path):
    second = write_task(tmp_path / "second", {"train": friends_rows("tr", ["yes", "no"], 15),
                                              "dev": friends_rows("dv", ["yes", "no"], 3),
                                              "test": friends_rows("te", ["yes", "no"], 3)})
    sets = {"small": _sets(small_task, tiny_base), "second": _sets(second, tiny_base)}
    models = {"small": tiny_model(tiny_base, seed=0), "second": tiny_model(tiny_base, seed=1, labels=("no", "yes"))}
    models["second"].body = models["small"].body
    heads_before = {t: _params(m.head) for t, m in models.items()}
    body_before = _params(models["small"].body)
    recipe = TrainConfig(lr=5e-3, epochs=2, batch_size=8, select="last")
    result = fine_tune(models, {t: s[0] for t, s in sets.items()}, {t: s[1] for t, s in sets.items()}, recipe, seed=0)

    assert models["second"].body is models["small"].body
    assert all(set(h["dev"]) == {"small", "second"} for h in result.history)
    for task, model in models.items():  # each task's batches trained its own head
        assert model.head.weight.shape[0] == len(sets[task][0].task.labels)
        for param_name, param in model.head.named_parameters():
            assert not torch.equal(param.detach(), heads_before[task][param_name]), (task, param_name)
    changed = [n for n, p in models["small"].body.named_parameters() if not torch.equal(p.detach(), body_before[n])]
    assert "encoder.layer.1.output.dense.weight" in changed
    for task, (_, dev) in sets.items():  # the reported dev scores are those of the models as left
        loss = SHAPE.nll(predict_logits(models[task], SHAPE, dev.encoded), dev.encoded)
        assert result.dev[task]["loss"] == pytest.approx(loss, abs=1e-5)
