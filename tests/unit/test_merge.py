"""The weight space merges exactly: live parameters equal the weighted sums computed by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import perturbed_copies
from safetensors.torch import load_file

from dfwe.checkpoints import load_model
from dfwe.errors import BadInput
from dfwe.merge.groups import make_grouping
from dfwe.merge.methods import coefficients
from dfwe.merge.space import WeightSpace


def _states(folders):
    return [load_file(str(f / "model.safetensors")) for f in folders]


def test_linear_merge_writes_exact_weighted_sum_into_live_model(tiny_base, tmp_path):
    folders = perturbed_copies(tiny_base, tmp_path, 3)
    space = WeightSpace.from_checkpoints(folders)
    model = load_model(folders[0])
    space.bind(model)
    weights = np.array([0.5, 0.25, 0.25])
    space.merge(weights)
    states = _states(folders)
    for name, param in model.named_parameters():
        expected = 0.5 * states[0][name] + 0.25 * states[1][name] + 0.25 * states[2][name]
        torch.testing.assert_close(param.detach(), expected, rtol=0, atol=1e-6)


def test_one_hot_weights_reproduce_an_ingredient_bit_for_bit(tiny_base, tmp_path):
    folders = perturbed_copies(tiny_base, tmp_path, 3)
    space = WeightSpace.from_checkpoints(folders)
    model = load_model(folders[0])
    space.bind(model)
    space.merge(np.array([0.0, 1.0, 0.0]))
    state = _states(folders)[1]
    for name, param in model.named_parameters():
        assert torch.equal(param.detach(), state[name]), name


def test_merge_changes_model_outputs_in_place_without_rebinding(tiny_base, tmp_path):
    folders = perturbed_copies(tiny_base, tmp_path, 2, scale=0.5)
    space = WeightSpace.from_checkpoints(folders)
    model = load_model(folders[0]).eval()
    space.bind(model)
    ids = torch.tensor([[2, 5, 6, 3]])
    space.merge(np.array([1.0, 0.0]))
    first = model(input_ids=ids).logits.detach().clone()
    space.merge(np.array([0.0, 1.0]))
    second = model(input_ids=ids).logits.detach().clone()
    reference = load_model(folders[1]).eval()
    torch.testing.assert_close(second, reference(input_ids=ids).logits.detach(), rtol=0, atol=1e-6)
    assert not torch.allclose(first, second)


def test_per_layer_groups_take_their_own_weights(tiny_base, tmp_path):
    folders = perturbed_copies(tiny_base, tmp_path, 2)
    space = WeightSpace.from_checkpoints(folders)
    grouping = space.set_grouping("layer")
    assert grouping.labels == ("embeddings", "layer.0", "layer.1", "head")
    assert [grouping.labels[grouping.index[space.names.index(n)]] for n in ("head.weight", "head.bias")] == ["head"] * 2
    weights = np.array([[1.0, 0.0], [0.0, 1.0], [0.3, 0.7], [0.5, 0.5]])
    model = load_model(folders[0])
    space.bind(model)
    space.merge(weights)
    states = _states(folders)
    row = {"embeddings": 0, "layer.0": 1, "layer.1": 2, "head": 3}
    for name, param in model.named_parameters():
        group = grouping.labels[grouping.index[space.names.index(name)]]
        w = weights[row[group]]
        torch.testing.assert_close(param.detach(), w[0] * states[0][name] + w[1] * states[1][name], rtol=0, atol=1e-6)


def test_task_arithmetic_is_base_plus_scaled_task_vectors(tiny_base, tmp_path):
    folders = perturbed_copies(tiny_base, tmp_path, 3)
    base, experts = folders[0], folders[1:]
    space = WeightSpace.from_checkpoints(experts, base=base)
    model = load_model(experts[0])
    space.bind(model)
    scales = np.array([0.8, -0.3])
    space.merge(coefficients("task_arithmetic", scales, space.has_base))
    b, e1, e2 = _states([base, *experts])
    for name, param in model.named_parameters():
        expected = b[name] + 0.8 * (e1[name] - b[name]) - 0.3 * (e2[name] - b[name])
        torch.testing.assert_close(param.detach(), expected, rtol=0, atol=1e-6)


def test_groupings_of_dfwe_names():
    names = ["body.embeddings.word_embeddings.weight", "body.embeddings.LayerNorm.weight",
             "body.encoder.layer.0.attention.self.query.weight", "body.encoder.layer.0.attention.output.LayerNorm.bias",
             "body.encoder.layer.0.intermediate.dense.weight", "body.encoder.layer.3.output.dense.weight",
             "body.pooler.dense.weight", "head.weight", "head.bias"]
    assert make_grouping(names, "model").labels == ("all",)
    kind = make_grouping(names, "kind")
    assert [kind.labels[i] for i in kind.index] == ["embeddings", "embeddings", "attention", "norms", "feed_forward",
                                                    "feed_forward", "head", "head", "head"]
    block = make_grouping(names, "block", block_size=2)
    assert [block.labels[i] for i in block.index] == ["embeddings", "embeddings", "layers.0-1", "layers.0-1",
                                                      "layers.0-1", "layers.2-3", "head", "head", "head"]
    layer = make_grouping(names, "layer")
    assert [layer.labels[i] for i in layer.index] == ["embeddings", "embeddings", "layer.0", "layer.0", "layer.0",
                                                      "layer.3", "head", "head", "head"]


def test_wrong_weight_shape_and_nan_weights_are_bad_input(tiny_base, tmp_path):
    folders = perturbed_copies(tiny_base, tmp_path, 2)
    space = WeightSpace.from_checkpoints(folders)
    with pytest.raises(BadInput, match="shape"):
        space.merge(np.array([0.2, 0.3, 0.5]))
    with pytest.raises(BadInput, match="NaN"):
        space.merge(np.array([np.nan, 1.0]))
