"""The scores stage merges each scored model once for all the splits it is scored on, and not at all when its
outputs are cached; each split gets its own outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dfwe.data.encode import EncodedSet
from dfwe.data.records import Example, Task
from dfwe.data.sets import ExampleSet
from dfwe.eval.scores import LOGIT_ENSEMBLE, Merge, score_methods

LABELS = ("a", "b", "c")


def example_set(name: str, gold: np.ndarray) -> ExampleSet:
    task = Task(name=name, path=Path(name), shape="classification", labels=LABELS, metric="accuracy", splits={})
    examples = tuple(Example(id=f"{name}{i}", text="x", label=LABELS[g]) for i, g in enumerate(gold))
    # the first token tells the splits apart (their digests, so their cached outputs, differ)
    tokens = torch.full((len(gold), 1), len(name), dtype=torch.long)
    encoded = EncodedSet(ids=tuple(e.id for e in examples), input_ids=tokens, token_type_ids=torch.zeros_like(tokens),
                         lengths=torch.ones(len(gold), dtype=torch.long), labels=torch.tensor(gold), pad_id=0)
    return ExampleSet(task, examples, encoded)


def test_each_model_is_merged_once_for_every_split_and_not_at_all_when_cached(tmp_path):
    rng = np.random.default_rng(0)
    splits = {"dev": example_set("dev", rng.integers(0, 3, 12)), "test": example_set("test", rng.integers(0, 3, 20)),
              "validation": example_set("validation", rng.integers(0, 3, 16))}
    outputs = {name: [rng.normal(size=(len(s.examples), 3)) for _ in range(3)] for name, s in splits.items()}

    class Fold:
        """A live model whose output on a split is the weighted sum of the ingredients' outputs there."""

        def __init__(self):
            self.calls, self.weights = [], None

        def merge(self, method, weights, refit=True):
            self.calls.append((tuple(np.ravel(weights)), refit))
            self.weights = np.ravel(weights)

        def logits(self, data, batch_size=64):
            return sum(w * o for w, o in zip(self.weights, outputs[data.task.name]))

    merges = {"uniform-soup": Merge(np.full(3, 1 / 3)), "dfwe": Merge(np.array([0.2, 0.5, 0.3]))}
    fold = Fold()
    scores = score_methods(fold, ["k0", "k1", "k2"], ["i0", "i1", "i2"], merges, splits, tmp_path, {"rule": "refit"},
                           64, 0, 0)
    # three ingredients as trained (their own heads), then each merge under the head rule: once each
    assert fold.calls == [((1.0, 0.0, 0.0), False), ((0.0, 1.0, 0.0), False), ((0.0, 0.0, 1.0), False),
                          ((1 / 3, 1 / 3, 1 / 3), True), ((0.2, 0.5, 0.3), True)]
    for split, data in splits.items():
        gold = data.encoded.labels.numpy()
        expected = {"i1": outputs[split][1], "dfwe": 0.2 * outputs[split][0] + 0.5 * outputs[split][1]
                    + 0.3 * outputs[split][2], LOGIT_ENSEMBLE: sum(outputs[split]) / 3}
        for method, logits in expected.items():
            accuracy = float((logits.argmax(axis=1) == gold).mean())
            assert scores.metrics[method][split]["accuracy"] == accuracy, (method, split)
    again = Fold()
    rescored = score_methods(again, ["k0", "k1", "k2"], ["i0", "i1", "i2"], merges, splits, tmp_path,
                             {"rule": "refit"}, 64, 0, 0)
    assert again.calls == [] and rescored.metrics == scores.metrics  # every output read back from the cache
