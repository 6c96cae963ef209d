"""``model.trainable_layers``: a frozen trunk computed once, the top layers trained and merged on its output.

On tiny BERTs built in code, with exact checks: the stored states are the trunk's own forward, bit for bit; an
edited example recomputes exactly its own rows; training the top layers on stored states gives the same weights
as computing the frozen layers live (eval mode, no gradient); every ingredient's and every merged model's frozen
tensors are the base's bit for bit, for every task shape; the exported model scored from raw text reproduces
the run's test score; a weight space refuses checkpoints whose frozen tensors differ.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import friends_rows, perturbed_copies, tiny_suite_and_base, write_task
from safetensors.torch import load_file

from dfwe.checkpoints import load_tokenizer, new_model, resolve_pooling
from dfwe.data.encode import Preprocessing, TrunkStates
from dfwe.data.sets import ExampleSet
from dfwe.data.shapes import get_shape
from dfwe.data.tasks import load_task
from dfwe.errors import BadInput
from dfwe.merge.space import WeightSpace
from dfwe.modeling import in_trunk
from dfwe.train.loop import TrainConfig, fine_tune
from dfwe.train.trunk import TrunkStore

DEPTH = 1  # a 2-layer base with trainable_layers 1: embeddings and layer 0 frozen, layer 1 and the head train


def dfwe(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dfwe.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "DFWE_PROGRESS": "0"})


@pytest.fixture
def task_set(tiny_base, tmp_path):
    task = load_task(write_task(tmp_path / "t", {s: friends_rows(s, ["neg", "neu", "pos"], 8)
                                                 for s in ("train", "dev", "test")}))
    examples = task.splits["train"]
    encoded = get_shape("classification").encode(examples, load_tokenizer(tiny_base), task, Preprocessing(max_length=24))
    return ExampleSet(task, examples, encoded)


def model_on(base: Path, seed: int = 0):
    torch.manual_seed(seed)
    return new_model(base, "classification", ("neg", "neu", "pos"), resolve_pooling(base))


def store(base: Path, folder: Path) -> TrunkStore:
    return TrunkStore(folder, "test-trunk", model_on(base), DEPTH, "float32")


def row_states(model, encoded, row: int) -> np.ndarray:
    """A fresh forward of the trunk over one row alone."""
    length = int(encoded.lengths[row])
    ids, types = encoded.input_ids[row:row + 1, :length], encoded.token_type_ids[row:row + 1, :length]
    return model.eval().trunk_states(ids, torch.ones_like(ids), types, DEPTH)[0].numpy()


def test_stored_states_are_the_trunks_own_forward_bit_for_bit(task_set, tiny_base, tmp_path):
    encoded = task_set.encoded
    states = store(tiny_base, tmp_path / "store").states(encoded, "train")
    model = model_on(tiny_base).eval()
    gathered = states.gather(np.arange(len(encoded)), encoded.lengths.numpy(), encoded.input_ids.shape[1])
    for row in range(len(encoded)):
        length = int(encoded.lengths[row])
        assert np.array_equal(gathered[row, :length], row_states(model, encoded, row))
        assert not gathered[row, length:].any()  # padding reads zeros
    # the same as the encoder's own hidden states after layer DEPTH, run whole and padded
    with torch.no_grad():
        mask = (torch.arange(encoded.input_ids.shape[1]) < encoded.lengths[:, None]).long()
        hidden = model.body(input_ids=encoded.input_ids, attention_mask=mask, token_type_ids=encoded.token_type_ids,
                            output_hidden_states=True).hidden_states
    real = mask.bool().numpy()
    np.testing.assert_allclose(gathered[real], hidden[DEPTH].numpy()[real], rtol=0, atol=1e-5)


def test_an_edited_example_recomputes_exactly_its_own_rows(task_set, tiny_base, tmp_path):
    trunk = store(tiny_base, tmp_path / "store")
    first = trunk.states(task_set.encoded, "train")
    rows = lambda: trunk._db.execute("SELECT count(*) FROM rows").fetchone()[0]  # noqa: E731
    before = rows()
    edited = list(task_set.examples)
    edited[3] = replace(edited[3], text=edited[3].text + " wow")
    encoded = get_shape("classification").encode(edited, load_tokenizer(tiny_base), task_set.task,
                                                 Preprocessing(max_length=24))
    second = trunk.states(encoded, "train")
    assert rows() == before + 1  # one new row stored, every other one read back
    keep = [i for i in range(len(edited)) if i != 3]
    old = first.gather(np.array(keep), task_set.encoded.lengths.numpy()[keep], 24)
    new = second.gather(np.array(keep), encoded.lengths.numpy()[keep], 24)
    assert np.array_equal(old, new)
    assert np.array_equal(second.gather(np.array([3]), encoded.lengths.numpy()[[3]], 24)[0, :int(encoded.lengths[3])],
                          row_states(model_on(tiny_base), encoded, 3))


class LiveTrunk(TrunkStates):
    """The frozen layers computed live for every batch (eval mode, no gradient), row by row."""

    def __new__(cls, model, encoded):
        live = super().__new__(cls)
        object.__setattr__(live, "model", model)
        object.__setattr__(live, "encoded", encoded)
        return live

    def __init__(self, model, encoded):
        super().__init__((), np.zeros((len(encoded), 2), dtype=np.int64), DEPTH, "live")

    def gather(self, rows, lengths, width):
        out = np.zeros((len(rows), width, self.model.config.encoder_config.hidden_size), dtype=np.float32)
        was_training = self.model.training
        for j, row in enumerate(rows):
            out[j, :int(lengths[j])] = row_states(self.model, self.encoded, int(row))
        self.model.train(was_training)
        return out


def test_training_on_stored_states_equals_computing_the_frozen_layers_live(task_set, tiny_base, tmp_path):
    recipe = TrainConfig(lr=5e-3, epochs=3, batch_size=4, select="last")
    stored = replace(task_set, encoded=replace(task_set.encoded,
                                               states=store(tiny_base, tmp_path / "store").states(task_set.encoded, "t")))
    trained = []
    for states_of in (lambda model: stored, lambda model: replace(task_set, encoded=replace(
            task_set.encoded, states=LiveTrunk(model, task_set.encoded)))):
        model = model_on(tiny_base)
        data = states_of(model)
        fine_tune({"t": model}, {"t": data}, None, recipe, seed=0)
        trained.append({name: p.detach().clone() for name, p in model.named_parameters()})
    base_model = model_on(tiny_base)
    moved = 0
    for name, value in trained[0].items():
        assert torch.equal(value, trained[1][name]), name
        if in_trunk(name, DEPTH):
            assert torch.equal(value, dict(base_model.named_parameters())[name]), name  # frozen: the base's
        else:
            moved += not torch.equal(value, dict(base_model.named_parameters())[name])
    assert moved >= 10  # the top layer and the head did train


def test_a_weight_space_holds_only_what_trains_and_refuses_differing_frozen_tensors(tiny_base, tmp_path):
    folders = perturbed_copies(tiny_base, tmp_path / "m", 2)
    with pytest.raises(BadInput, match=r"tensor 'body\.(embeddings|encoder\.layer\.0)\..*' differs between .* frozen"):
        WeightSpace.from_checkpoints(folders, trunk_depth=DEPTH)
    top = {n: t for n, t in load_file(str(folders[1] / "model.safetensors")).items() if not in_trunk(n, DEPTH)}
    same_trunk = tmp_path / "same"
    same_trunk.mkdir()
    for item in folders[0].iterdir():
        (same_trunk / item.name).write_bytes(item.read_bytes())
    from safetensors.torch import save_file

    save_file({**load_file(str(folders[0] / "model.safetensors")), **top}, str(same_trunk / "model.safetensors"))
    space = WeightSpace.from_checkpoints([folders[0], same_trunk], trunk_depth=DEPTH)
    assert space.names and not any(in_trunk(n, DEPTH) for n in space.names)
    assert space.frozen and all(in_trunk(n, DEPTH) for n in space.frozen)


@pytest.fixture(scope="module")
def suite_run(tmp_path_factory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("trunk-suite")
    suite, base = tiny_suite_and_base(root)
    # reading comprehension as FETA's config reads it: each cloze once, each choice at its mentions
    config = {"data": {"data_dir": str(suite), "target": "emo", "sources": ["rc"], "sampling": "dialogues",
                       "fraction": 0.5, "max_length": {"default": 24, "qa": 32}, "stride": 8,
                       "choice_encoding": "mentions"},
              "model": {"base": str(base), "trainable_layers": 1, "trunk_dtype": "float32"},
              "experts": {"train": {"epochs": 1, "batch_size": 8}},
              "target": {"head": "own", "train": {"epochs": 2, "batch_size": 8, "linear_probe": True}},
              # Fisher-weighted merges per layer: every shape's loss differentiated through the top layer
              "merge": {"head": "refit"}, "search": {"budget": 3, "granularity": "layer", "space": "fisher"},
              "eval": {"bootstrap": 20}}
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    out = root / "out"
    done = dfwe("bench", "--suite", str(suite), "--config", str(root / "config.yaml"), "--seeds", "0", "--out", str(out),
                "--cache", str(root / "cache"))
    assert done.returncode == 0, done.stderr[-3000:]
    return suite, out, base


def test_every_frozen_tensor_of_every_ingredient_and_merge_is_the_bases(suite_run):
    _, out, base = suite_run
    base_tensors = load_file(str(base / "model.safetensors"))
    folders = [*out.parent.glob("cache/ingredients/*"), *out.glob("targets/*/seeds/0/merged")]
    assert len(folders) >= 4 * 5
    for folder in folders:
        tensors = load_file(str(folder / "model.safetensors"))
        frozen = [name for name in tensors if in_trunk(name, DEPTH)]
        assert frozen, folder
        for name in frozen:
            assert torch.equal(tensors[name], base_tensors[name.removeprefix("body.")]), (folder, name)


@pytest.mark.parametrize("target", ["emo", "rel", "qa", "rc"])
def test_the_merged_model_scored_from_raw_text_reproduces_the_runs_test_score(target, suite_run):
    suite, out, _ = suite_run
    run = out / "targets" / target / "seeds" / "0"
    results = json.loads((run / "results.json").read_text())
    # the search's own points are Fisher-weighted merges, the soups it also scores linear ones
    kept = results["search"]["kept"]
    assert results["methods"]["dfwe"]["method"] == ("fisher" if kept == "search" else "linear")
    done = dfwe("evaluate", str(run / "merged"), "--task", str(suite / target), "--split", "test")
    assert done.returncode == 0, done.stderr
    metric = results["task"]["metric"]
    assert json.loads(done.stdout)[metric] == pytest.approx(results["methods"]["dfwe"]["test"][metric], abs=1e-6)
    if target == "rc":  # the model records how it reads choices, so evaluate encodes them as the run did
        assert json.loads((run / "merged" / "dfwe.json").read_text())["preprocessing"]["choices"] == "mentions"
    assert results["timing_seconds"]["trunk"] > 0
