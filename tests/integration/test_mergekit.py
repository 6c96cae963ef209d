"""The exported mergekit.yaml, run through the real mergekit, reproduces dfwe's merge to 1e-6."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import perturbed_copies
from safetensors.torch import load_file

from dfwe.merge.export import mergekit_config, write_mergekit_yaml
from dfwe.merge.space import WeightSpace


def run_mergekit(config_path: Path, out: Path, *extra: str) -> dict[str, torch.Tensor]:
    """mergekit itself, through ``dfwe mergekit`` (which registers dfwe's model classes first)."""
    done = subprocess.run([sys.executable, "-m", "dfwe.cli", "mergekit", str(config_path), str(out), *extra],
                          capture_output=True, text=True)
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
    write_mergekit_yaml(path, mergekit_config(space, weights, models, method, base, relative_to=tmp_path))
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
    state["body.embeddings.word_embeddings.weight"] = torch.zeros(3, 16)
    save_file(state, str(folders[1] / "model.safetensors"))
    done = subprocess.run([sys.executable, "-m", "dfwe.cli", "merge", *map(str, folders), "--weights", "0.5", "0.5",
                           "--out", str(tmp_path / "m")], capture_output=True, text=True)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1
    assert "body.embeddings.word_embeddings.weight" in done.stderr and str(folders[1]) in done.stderr
    assert not (tmp_path / "m").exists()


def test_recipe_survives_moving_the_run_folder_and_finds_ingredients_elsewhere(tiny_base, tmp_path):
    run = tmp_path / "run"
    folders = perturbed_copies(tiny_base, run / "work", 3)
    space = WeightSpace.from_checkpoints(folders)
    weights = np.array([0.2, 0.5, 0.3])
    space.apply("linear", weights)
    expected = {name: tensor.clone() for name, tensor in space.state_dict().items()}
    write_mergekit_yaml(run / "mergekit.yaml", mergekit_config(space, weights, folders, "linear", relative_to=run))
    assert str(tmp_path) not in (run / "mergekit.yaml").read_text()  # nothing absolute in the recipe
    moved = shutil.move(str(run), str(tmp_path / "elsewhere" / "run"))
    theirs = run_mergekit(Path(moved) / "mergekit.yaml", tmp_path / "mk-moved")
    for name, tensor in expected.items():
        torch.testing.assert_close(theirs[name].float(), tensor, rtol=0, atol=1e-6)
    # the recipe alone, its ingredients in another folder
    recipe = tmp_path / "recipe-only"
    recipe.mkdir()
    shutil.copy(Path(moved) / "mergekit.yaml", recipe / "mergekit.yaml")
    theirs = run_mergekit(recipe / "mergekit.yaml", tmp_path / "mk-dir", "--ingredients-dir", str(Path(moved) / "work"))
    for name, tensor in expected.items():
        torch.testing.assert_close(theirs[name].float(), tensor, rtol=0, atol=1e-6)
    missing = subprocess.run([sys.executable, "-m", "dfwe.cli", "mergekit", str(recipe / "mergekit.yaml"),
                              str(tmp_path / "mk-missing")], capture_output=True, text=True)
    assert missing.returncode == 2 and "--ingredients-dir" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1


def test_refit_head_is_taken_from_the_merged_folder(tiny_base, tmp_path):
    """A head refit on the merged body is no weighting of the ingredients' heads: the recipe reads it from merged/."""
    folders = perturbed_copies(tiny_base, tmp_path, 3)
    space = WeightSpace.from_checkpoints(folders)
    weights = np.array([0.6, 0.1, 0.3])
    space.apply("linear", weights)
    merged = perturbed_copies(tiny_base, tmp_path / "merged-src", 1, scale=0.5)[0]  # stands for merged/ with its own head
    head = {n: t for n, t in load_file(str(merged / "model.safetensors")).items() if n.startswith("head.")}
    write_mergekit_yaml(tmp_path / "mergekit.yaml", mergekit_config(space, weights, folders, "linear",
                                                                    relative_to=tmp_path, head_from=merged))
    theirs = run_mergekit(tmp_path / "mergekit.yaml", tmp_path / "mk-out")
    for name, tensor in space.state_dict().items():
        expected = head[name] if name.startswith("head.") else tensor
        torch.testing.assert_close(theirs[name].float(), expected, rtol=0, atol=1e-6)


def test_mergekit_rebuilds_a_merge_over_a_frozen_trunk_whole(tiny_base, tmp_path):
    """With a frozen trunk the weight space holds only the top layers; the recipe still rebuilds every tensor:
    the merged top, and the trunk (the same in every model) taken from the first."""
    from safetensors.torch import save_file

    from dfwe.modeling import in_trunk

    depth = 1
    models = perturbed_copies(tiny_base, tmp_path, 3)
    trunk = {n: t for n, t in load_file(str(models[0] / "model.safetensors")).items() if in_trunk(n, depth)}
    for folder in models[1:]:  # what trainable_layers makes true: every ingredient shares the trunk
        save_file({**load_file(str(folder / "model.safetensors")), **trunk}, str(folder / "model.safetensors"))
    space = WeightSpace.from_checkpoints(models, trunk_depth=depth)
    space.set_grouping("layer", block_size=2)
    weights = np.random.default_rng(0).uniform(0.0, 1.0, size=(space.grouping.size, 3))
    space.apply("linear", weights)
    path = tmp_path / "mergekit.yaml"
    write_mergekit_yaml(path, mergekit_config(space, weights, models, "linear", None, relative_to=tmp_path))
    theirs = run_mergekit(path, tmp_path / "mk-out")
    assert trunk and not set(trunk) & set(space.state_dict())
    for name, tensor in {**space.state_dict(), **trunk}.items():
        torch.testing.assert_close(theirs[name].float(), tensor.float(), rtol=0, atol=1e-6)
