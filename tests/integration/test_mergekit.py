"""The exported mergekit.yaml, run through the real mergekit, reproduces dfwe's merge to 1e-6."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import perturbed_copies
from dfwe.merge.export import mergekit_config, write_mergekit_yaml
from dfwe.merge.space import WeightSpace

MERGEKIT = shutil.which("mergekit-yaml") or str(Path(sys.executable).parent / "mergekit-yaml")


def run_mergekit(config_path: Path, out: Path) -> dict[str, torch.Tensor]:
    done = subprocess.run([MERGEKIT, str(config_path), str(out)], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    return load_file(str(out / "model.safetensors"))


@pytest.mark.parametrize("method,granularity", [("linear", "layer"), ("linear", "kind"), ("task_arithmetic", "model"),
                                                ("task_arithmetic", "block")])
def test_mergekit_reproduces_dfwe_merge(tiny_base, tmp_path, method, granularity):
    folders = perturbed_copies(tiny_base, tmp_path, 4)
    base = folders[0] if method == "task_arithmetic" else None
    models = folders[1:] if base is not None else folders[:3]
    space = WeightSpace.from_checkpoints(models, base=base)
    space.set_grouping(granularity, block_size=2)
    rng = np.random.default_rng(0)
    weights = rng.uniform(-0.3, 1.0, size=(space.grouping.size, 3))
    space.apply(method, weights)
    path = tmp_path / "mergekit.yaml"
    write_mergekit_yaml(path, mergekit_config(space, weights, models, method, base))
    theirs = run_mergekit(path, tmp_path / "mk-out")
    ours = space.state_dict()
    assert set(ours) <= set(theirs)
    for name, tensor in ours.items():
        torch.testing.assert_close(theirs[name].float(), tensor, rtol=0, atol=1e-6)


def test_cli_merge_writes_a_model_and_a_recipe_mergekit_agrees_with(tiny_base, tmp_path):
    folders = perturbed_copies(tiny_base, tmp_path, 2)
    out = tmp_path / "merged"
    done = subprocess.run([sys.executable, "-m", "dfwe.cli", "merge", *map(str, folders), "--weights", "0.3", "0.7",
                           "--out", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    ours = load_file(str(out / "model.safetensors"))
    theirs = run_mergekit(out / "mergekit.yaml", tmp_path / "mk-out")
    states = [load_file(str(f / "model.safetensors")) for f in folders]
    for name in ours:
        torch.testing.assert_close(ours[name], 0.3 * states[0][name] + 0.7 * states[1][name], rtol=0, atol=1e-6)
        torch.testing.assert_close(theirs[name].float(), ours[name], rtol=0, atol=1e-6)


def test_cli_merge_mismatch_exits_2_naming_the_tensor(tiny_base, tmp_path):
    from safetensors.torch import save_file

    folders = perturbed_copies(tiny_base, tmp_path, 2)
    state = load_file(str(folders[1] / "model.safetensors"))
    state["bert.embeddings.word_embeddings.weight"] = torch.zeros(3, 16)
    save_file(state, str(folders[1] / "model.safetensors"))
    done = subprocess.run([sys.executable, "-m", "dfwe.cli", "merge", *map(str, folders), "--weights", "0.5", "0.5",
                           "--out", str(tmp_path / "m")], capture_output=True, text=True)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1
    assert "bert.embeddings.word_embeddings.weight" in done.stderr and str(folders[1]) in done.stderr
    assert not (tmp_path / "m").exists()
