"""Fisher-weighted merging: the Fisher is each ingredient's mean squared per-example gradient, the merge is the
Fisher-weighted average parameter by parameter, and a search in the ``fisher`` space scores its soups linearly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import perturbed_copies
from safetensors.torch import load_file

from dfwe.checkpoints import load_model, load_tokenizer
from dfwe.data.encode import Preprocessing, eval_batches
from dfwe.data.sets import ExampleSet
from dfwe.data.shapes import get_shape
from dfwe.data.tasks import load_task
from dfwe.errors import BadInput
from dfwe.merge.fisher import FISHER_FLOOR, fisher_rows
from dfwe.merge.fold import FoldSpec, HeadRefit, ingredient_fishers
from dfwe.merge.space import WeightSpace
from dfwe.search.objective import Objective
from dfwe.search.run import SearchConfig, search_stage


def _example_set(task_folder, base, split: str) -> ExampleSet:
    task = load_task(task_folder)
    examples = task.splits[split]
    return ExampleSet(task, examples, get_shape("classification").encode(examples, load_tokenizer(base), task,
                                                                         Preprocessing(max_length=32)))


def test_each_ingredients_fisher_is_its_mean_squared_gradient_at_targets_drawn_from_itself(tiny_base, small_task,
                                                                                          tmp_path):
    folders = perturbed_copies(tiny_base, tmp_path, 2, scale=0.2)
    train = _example_set(small_task, tiny_base, "train")
    space = WeightSpace.from_checkpoints(folders)
    model = load_model(folders[0])
    space.bind(model)
    fisher = ingredient_fishers(space, model, train.shape, train.encoded, seed=3)

    for index, folder in enumerate(folders):  # by hand: a fresh copy of the ingredient, one example at a time
        reference = load_model(folder).eval()
        params = dict(reference.named_parameters())
        expected = {name: torch.zeros_like(params[name]) for name in space.names}
        generator = torch.Generator().manual_seed(int(np.random.default_rng([3, index, 0xF15]).integers(2**62)))
        rows, drawn = [], []
        for batch in eval_batches(train.encoded, 1):
            rows.append(int(batch.rows[0]))
            logits = reference(**batch.model_inputs()).logits
            label = torch.multinomial(torch.softmax(logits.detach(), dim=-1), 1, generator=generator).reshape(1)
            drawn.append(int(label))
            reference.zero_grad()
            torch.nn.functional.cross_entropy(logits, label).backward()
            for name in space.names:
                expected[name] += params[name].grad ** 2 / len(train.encoded)
        assert sorted(rows) == list(range(len(train.encoded))) and len(set(drawn)) > 1
        for slot in space.slots:
            got = fisher[index, slot.offset : slot.offset + slot.numel].view(slot.shape)
            torch.testing.assert_close(got, expected[slot.name], rtol=1e-4, atol=1e-10)
    assert (fisher > 0).any(dim=1).all()
    assert not torch.allclose(fisher[0], fisher[1])  # the two ingredients' Fishers differ
    torch.testing.assert_close(ingredient_fishers(space, model, train.shape, train.encoded, seed=3), fisher,
                               rtol=0, atol=0)  # seeded: the same draws again


def test_targets_are_drawn_from_the_models_own_distribution():
    generator = torch.Generator().manual_seed(0)
    draws = 20000
    logits = torch.tensor([[2.0, 0.0, -1.0, torch.finfo(torch.float32).min]])  # the last column is padding
    expected = torch.softmax(logits, dim=-1)[0]
    for name in ("classification", "multiple_choice"):
        drawn = torch.cat([get_shape(name).sample_labels(logits, generator) for _ in range(draws)])
        frequencies = torch.bincount(drawn, minlength=4).float() / draws
        torch.testing.assert_close(frequencies, expected, rtol=0, atol=0.015)
        assert frequencies[3] == 0
    span = torch.stack([logits[0], logits[0].flip(0)])[None]  # [rows, start/end, tokens]
    drawn = torch.cat([get_shape("span").sample_labels(span, generator) for _ in range(draws)])
    assert drawn.shape == (draws, 2)
    torch.testing.assert_close(torch.bincount(drawn[:, 0], minlength=4).float() / draws, expected, rtol=0, atol=0.015)
    torch.testing.assert_close(torch.bincount(drawn[:, 1], minlength=4).float() / draws, expected.flip(0), rtol=0,
                               atol=0.015)
    multilabel = torch.tensor([[0.0, 2.0, -3.0]])
    drawn = torch.cat([get_shape("multilabel").sample_labels(multilabel, generator) for _ in range(draws)])
    torch.testing.assert_close(drawn.mean(dim=0), torch.sigmoid(multilabel)[0], rtol=0, atol=0.015)
    assert set(drawn.unique().tolist()) == {0.0, 1.0}


def test_the_fisher_merge_is_the_fisher_weighted_average_and_its_limits(tiny_base, tmp_path):
    folders = perturbed_copies(tiny_base, tmp_path, 3)
    space = WeightSpace.from_checkpoints(folders)
    model = load_model(folders[0])
    space.bind(model)
    generator = torch.Generator().manual_seed(0)
    raw = torch.rand((3, space.stacked.shape[1]), generator=generator) ** 4  # uneven, as a Fisher is
    raw[:, :5] = 0.0  # parameters no ingredient's loss depends on
    space.set_fisher(raw)
    scaled = raw / raw.mean(dim=1, keepdim=True) + FISHER_FLOOR
    weights = np.array([0.5, 0.3, 0.2])
    space.apply("fisher", weights)
    states = [load_file(str(f / "model.safetensors")) for f in folders]
    params = dict(model.named_parameters())
    for slot in space.slots:
        f = scaled[:, slot.offset : slot.offset + slot.numel].view(3, *slot.shape)
        w = torch.tensor(weights, dtype=torch.float32).view(3, *([1] * len(slot.shape)))
        expected = sum(w[i] * f[i] * states[i][slot.name] for i in range(3)) / (w * f).sum(dim=0)
        torch.testing.assert_close(params[slot.name].detach(), expected, rtol=1e-5, atol=1e-6)
    # where every Fisher is zero the floor leaves the linear merge
    first = space.slots[0]
    linear = sum(weights[i] * states[i][first.name].reshape(-1)[:5] for i in range(3))
    torch.testing.assert_close(space.live[:5], linear.float(), rtol=1e-5, atol=1e-6)

    space.apply("fisher", np.array([0.0, 1.0, 0.0]))  # one-hot: that ingredient
    for slot in space.slots:
        torch.testing.assert_close(params[slot.name].detach(), states[1][slot.name], rtol=1e-6, atol=1e-7)

    space.set_fisher(torch.ones_like(raw))  # equal Fishers: the linear merge
    space.apply("fisher", weights)
    fisher_merged = space.live.clone()
    space.apply("linear", weights)
    torch.testing.assert_close(fisher_merged, space.live, rtol=1e-5, atol=1e-6)


def test_fisher_merging_refuses_what_it_cannot_weigh(tiny_base, tmp_path):
    folders = perturbed_copies(tiny_base, tmp_path, 2)
    space = WeightSpace.from_checkpoints(folders)
    with pytest.raises(BadInput, match="Fisher on its train set"):
        space.apply("fisher", np.array([0.5, 0.5]))
    with pytest.raises(BadInput, match="NaN, Inf or negative"):
        fisher_rows(torch.tensor([[1.0, float("nan")], [1.0, 1.0]]))
    space.set_fisher(torch.ones((2, space.stacked.shape[1])))
    with pytest.raises(BadInput, match="non-negative weights"):
        space.apply("fisher", np.array([1.5, -0.5]))
    with pytest.raises(BadInput, match="NaN or Inf"):
        space.apply("fisher", np.array([np.nan, 1.0]))
    with_base = WeightSpace.from_checkpoints(folders, base=folders[0])
    with_base.set_fisher(torch.ones((2, with_base.stacked.shape[1])))
    with_base.sparsify_("ties", 0.5)  # task-vector rows: the Fisher of whole checkpoints no longer applies
    with pytest.raises(BadInput, match="Fisher on its train set"):
        with_base.apply("fisher", np.array([0.5, 0.5]))
    with pytest.raises(BadInput, match="task-vector rows"):
        with_base.set_fisher(torch.ones((2, with_base.stacked.shape[1])))


def test_a_fisher_search_keeps_its_soups_linear(tiny_base, small_task, tmp_path):
    folders = perturbed_copies(tiny_base, tmp_path, 3, scale=0.2)
    train, dev = (_example_set(small_task, tiny_base, split) for split in ("train", "dev"))
    spec = FoldSpec(tuple(folders), dev, device="cpu", refit=HeadRefit(train), fisher_data=train)
    fold = spec.build()
    uniform = np.full(3, 1 / 3)
    config = SearchConfig(budget=6, space="fisher", objective="calibrated_loss")
    outcome = search_stage([fold], config, seed=0, out_dir=tmp_path, start=uniform,
                           references={"uniform-soup": uniform})

    soup = outcome.result.records[-1]
    assert outcome.result.references == {soup.idx: "uniform-soup"}
    linear = FoldSpec(tuple(folders), dev, device="cpu", refit=HeadRefit(train)).build()
    assert soup.objective == pytest.approx(Objective([linear], "linear", "calibrated_loss")(uniform).value, abs=1e-9)
    start = outcome.result.records[0]  # the start point, the same weights merged by Fisher: another model
    assert start.objective == pytest.approx(Objective([fold], "fisher", "calibrated_loss")(uniform).value, abs=1e-9)
    assert start.objective != pytest.approx(soup.objective, abs=1e-6)
    assert outcome.method == ("fisher" if outcome.result.kept == "search" else "linear")
