"""The weight-space engine: validation, bfloat16 storage, TIES/DARE as in peft, exact LoRA composition,
atomic export."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import perturbed_copies, small_task_spec, tiny_model
from peft import LoraConfig, PeftModel, get_peft_model
from peft.utils.merge_utils import dare_linear, ties
from safetensors.torch import load_file, save_file

from dfwe.checkpoints import load_model, load_tokenizer, model_task, save_model
from dfwe.data.encode import Preprocessing
from dfwe.errors import BadInput
from dfwe.merge import export as export_module
from dfwe.merge.export import export_merged
from dfwe.merge.lora import lora_space
from dfwe.merge.space import WeightSpace


def _states(folders):
    return [load_file(str(f / "model.safetensors")) for f in folders]


def _base_classifier(tiny_base, folder):
    """A dfwe classifier folder on the tiny encoder: what LoRA adapters are trained on."""
    return save_model(tiny_model(tiny_base, seed=0), load_tokenizer(tiny_base), folder, Preprocessing(max_length=32),
                      small_task_spec())


def test_shape_mismatch_names_tensor_files_and_shapes(tiny_base, tmp_path):
    folders = perturbed_copies(tiny_base, tmp_path, 2)
    state = load_file(str(folders[1] / "model.safetensors"))
    state["head.weight"] = torch.zeros(5, 16)
    save_file(state, str(folders[1] / "model.safetensors"))
    with pytest.raises(BadInput) as error:
        WeightSpace.from_checkpoints(folders)
    message = str(error.value)
    assert "'head.weight'" in message and str(folders[0]) in message and str(folders[1]) in message
    assert "[3, 16]" in message and "[5, 16]" in message


def test_missing_tensor_and_dtype_mismatch_are_reported(tiny_base, tmp_path):
    folders = perturbed_copies(tiny_base, tmp_path, 2)
    state = load_file(str(folders[1] / "model.safetensors"))
    del state["head.bias"]
    save_file(state, str(folders[1] / "model.safetensors"))
    with pytest.raises(BadInput, match="'head.bias' is in .* but missing from"):
        WeightSpace.from_checkpoints(folders)
    state = load_file(str(folders[0] / "model.safetensors"))
    save_file({k: v.half() if k == "head.weight" else v for k, v in state.items()},
              str(folders[1] / "model.safetensors"))
    with pytest.raises(BadInput, match="'head.weight' has dtype F32 .* but F16"):
        WeightSpace.from_checkpoints(folders)


def test_nan_weight_is_reported_with_tensor_and_file(tiny_base, tmp_path):
    folders = perturbed_copies(tiny_base, tmp_path, 2)
    state = load_file(str(folders[1] / "model.safetensors"))
    state["head.bias"][2] = float("nan")
    save_file(state, str(folders[1] / "model.safetensors"))
    with pytest.raises(BadInput, match=f"'head.bias' in {folders[1]} holds NaN"):
        WeightSpace.from_checkpoints(folders)


def test_reading_in_slices_smaller_than_a_tensor_is_exact_and_still_finds_nan(tiny_base, tmp_path, monkeypatch):
    import dfwe.merge.space as space_module

    folders = perturbed_copies(tiny_base, tmp_path, 2)
    whole = WeightSpace.from_checkpoints(folders)
    monkeypatch.setattr(space_module, "READ_SLICE_BYTES", 100)  # 25 floats: most tensors span many slices
    sliced = WeightSpace.from_checkpoints(folders)
    assert torch.equal(whole.stacked, sliced.stacked)
    for row, state in enumerate(_states(folders)):
        for name, tensor in state.items():
            assert torch.equal(sliced.row_state(row)[name], tensor), name
    state = _states(folders)[1]
    name = "body.encoder.layer.1.output.dense.weight"
    assert state[name].numel() % 25 and state[name].numel() > 25  # many slices, the last one partial
    state[name][-1, -1] = float("inf")  # in the tensor's last slice
    save_file(state, str(folders[1] / "model.safetensors"))
    with pytest.raises(BadInput, match=f"'{name}' .* holds NaN or Inf"):
        WeightSpace.from_checkpoints(folders)


def test_bfloat16_storage_accumulates_in_float32(tiny_base, tmp_path):
    folders = perturbed_copies(tiny_base, tmp_path, 3)
    space = WeightSpace.from_checkpoints(folders, storage_dtype=torch.bfloat16)
    assert space.stacked.dtype == torch.bfloat16
    weights = np.array([0.2, 0.5, 0.3])
    merged = space.apply("linear", weights)
    rounded = [{k: v.bfloat16().float() for k, v in s.items()} for s in _states(folders)]
    for name, tensor in space.state_dict().items():
        expected = sum(w * s[name] for w, s in zip(weights, rounded))
        torch.testing.assert_close(tensor, expected, rtol=0, atol=1e-6)
    assert merged.dtype == torch.float32


@pytest.mark.parametrize("method", ["ties", "dare"])
def test_sparsified_merges_equal_peft_merge_utils(tiny_base, tmp_path, method):
    folders = perturbed_copies(tiny_base, tmp_path, 4)
    base, experts = folders[0], folders[1:]
    space = WeightSpace.from_checkpoints(experts, base=base).sparsify_(method, density=0.4, seed=11)
    weights = np.array([0.5, 0.3, 0.9])
    space.apply(method, weights)
    b, *thetas = _states([base, *experts])
    merged = space.state_dict()
    assert set(merged) == set(b)
    for index, slot in enumerate(space.slots):
        vectors = [t[slot.name] - b[slot.name] for t in thetas]
        if method == "ties":
            expected = b[slot.name] + ties(vectors, torch.tensor(weights, dtype=torch.float32), 0.4)
        else:
            torch.manual_seed(11 + index)
            expected = b[slot.name] + dare_linear(vectors, torch.tensor(weights, dtype=torch.float32), 0.4)
        torch.testing.assert_close(merged[slot.name], expected, rtol=0, atol=1e-6)


def _lora_adapter(base, out, seed, target_modules):
    """A LoRA adapter with random (non-zero) factors and a fully trained, perturbed copy of the head."""
    torch.manual_seed(seed)
    model = get_peft_model(load_model(base), LoraConfig(r=4, lora_alpha=8, target_modules=target_modules,
                                                        init_lora_weights=False, modules_to_save=["head"]))
    trained_head = [p for n, p in model.named_parameters() if "modules_to_save" in n]
    assert len(trained_head) == 2  # head.weight and head.bias
    with torch.no_grad():
        for param in trained_head:
            param.add_(0.1 * torch.randn_like(param))
    model.save_pretrained(str(out))
    return out


def test_lora_experts_compose_as_weighted_products_not_weighted_factors(tiny_base, tmp_path):
    base = _base_classifier(tiny_base, tmp_path / "b")
    adapters = [_lora_adapter(base, tmp_path / f"lora{i}", i, ["query", "value", "dense"]) for i in range(3)]
    weights = np.array([0.5, 0.2, 0.3])
    space = lora_space(base, adapters)
    assert {"head.weight", "head.bias"} <= set(space.names)
    model = load_model(base)
    space.bind(model)
    space.apply("linear", weights)

    base_state = _states([base])[0]
    dense = []
    for adapter in adapters:  # the dense reference: each adapter merged into the base by peft
        merged = PeftModel.from_pretrained(load_model(base), str(adapter)).merge_and_unload()
        dense.append({n: p.detach() for n, p in merged.named_parameters()})
    live = dict(model.named_parameters())
    assert set(live) == set(base_state)
    for name, base_tensor in base_state.items():
        expected = base_tensor + sum(w * (d[name] - base_tensor) for w, d in zip(weights, dense))
        torch.testing.assert_close(live[name].detach(), expected, rtol=0, atol=1e-6)
    assert not torch.allclose(live["head.weight"].detach(), base_state["head.weight"])  # the trained heads count

    # LoraHub's pattern, (sum w B)(sum w A), differs by the cross terms w_i w_j B_i A_j
    name = "body.encoder.layer.0.attention.self.query"
    tensors = [load_file(str(a / "adapter_model.safetensors")) for a in adapters]
    a_mix = sum(w * t[f"base_model.model.{name}.lora_A.weight"] for w, t in zip(weights, tensors))
    b_mix = sum(w * t[f"base_model.model.{name}.lora_B.weight"] for w, t in zip(weights, tensors))
    factor_mixed = base_state[f"{name}.weight"] + 2.0 * b_mix @ a_mix
    assert not torch.allclose(factor_mixed, live[f"{name}.weight"].detach(), atol=1e-4)


def test_dora_adapters_are_refused(tiny_base, tmp_path):
    base = _base_classifier(tiny_base, tmp_path / "b")
    model = get_peft_model(load_model(base), LoraConfig(r=2, target_modules=["query"], use_dora=True,
                                                        modules_to_save=["head"]))
    model.save_pretrained(str(tmp_path / "dora"))
    with pytest.raises(BadInput, match="DoRA"):
        lora_space(base, [tmp_path / "dora"])


def test_export_is_atomic_when_writing_fails(tiny_base, tmp_path, monkeypatch):
    folders = perturbed_copies(tiny_base, tmp_path, 2)
    space = WeightSpace.from_checkpoints(folders)
    model = load_model(folders[0])
    task, prep = model_task(folders[0])
    space.bind(model)
    out = tmp_path / "merged"
    export_merged(model, load_tokenizer(folders[0]), out, np.array([0.5, 0.5]), ["a", "b"], "linear", ["all"],
                  prep, task)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert "model.safetensors" in before and "dfwe.json" in before

    def crash(model, tokenizer, folder, prep, task, info=None):
        (folder / "model.safetensors").write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(export_module, "save_model", crash)
    with pytest.raises(OSError):
        export_merged(model, load_tokenizer(folders[0]), out, np.array([0.9, 0.1]), ["a", "b"], "linear", ["all"],
                      prep, task)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".merged")] == []


def test_merge_checkpoints_ties_writes_the_peft_merge(tiny_base, tmp_path):
    from dfwe.commands.merge import merge_checkpoints

    folders = perturbed_copies(tiny_base, tmp_path, 3)
    out = merge_checkpoints(folders[1:], [0.6, 0.4], tmp_path / "m", base=folders[0], method="ties", density=0.3)
    merged = load_file(str(out / "model.safetensors"))
    b, e1, e2 = _states(folders)
    for name in ("head.weight", "body.encoder.layer.1.output.dense.weight"):
        expected = b[name] + ties([e1[name] - b[name], e2[name] - b[name]], torch.tensor([0.6, 0.4]), 0.3)
        torch.testing.assert_close(merged[name], expected, rtol=0, atol=1e-6)
    assert "differ" in (out / "mergekit.yaml").read_text().splitlines()[0]
    with pytest.raises(BadInput, match="needs --base"):
        merge_checkpoints(folders[1:], [0.6, 0.4], tmp_path / "n", method="dare")
