"""``dfwe search``: search merge weights for given fine-tuned checkpoints on a dev file."""

from __future__ import annotations

from dataclasses import replace
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from dfwe.config import SearchConfig
from dfwe.data.encode import ExampleSet
from dfwe.data.tasks import read_split
from dfwe.errors import BadInput
from dfwe.eval.metrics import score
from dfwe.io import atomic_write_json, claim_output_dir
from dfwe.merge.export import export_merged, mergekit_config, write_mergekit_yaml
from dfwe.models import load_tokenizer, model_task
from dfwe.report.write import plot_trace
from dfwe.search.objective import FoldSpec
from dfwe.search.run import search_weights
from dfwe.shapes import get_shape


def read_dev(dev_file: Path, checkpoint: Path, max_length: int | None, context_turns: int | None) -> ExampleSet:
    """The dev file as the checkpoints' task, prepared as they were trained (``dfwe.json``; arguments override)."""
    task, prep = model_task(checkpoint)
    prep = replace(prep, **{k: v for k, v in {"max_length": max_length, "context_turns": context_turns}.items()
                            if v is not None})
    shape = get_shape(task.shape)
    read = read_split(dev_file, task.shape, prep.context_turns)
    for example, where in read:
        shape.check(example, task.labels, where)
    examples = tuple(example for example, _ in read)
    return ExampleSet(task, examples, shape.encode(examples, load_tokenizer(checkpoint), task, prep))


def search_checkpoints(paths: Sequence[Path], dev_file: Path, settings: SearchConfig, seed: int, out_dir: Path,
                       resume: bool = False, base: Path | None = None, max_length: int | None = None,
                       context_turns: int | None = None, device: str = "auto", overwrite: bool = False) -> dict[str, Any]:
    """Search weights for ``paths`` on ``dev_file``; writes ``results.json``, ``journal.sqlite``, ``merged/``.

    An ``out_dir`` that already holds files is continued on ``resume`` (same checkpoints, dev file and
    settings), replaced on ``overwrite``, and otherwise refused as bad input; inputs are checked first.
    """
    if dev_file.name.startswith("test"):
        raise BadInput(f"--dev {dev_file}: looks like a test split; the search objective may only use dev data")
    dev = read_dev(dev_file, Path(paths[0]), max_length, context_turns)
    if settings.workers > 1 and find_spec("ray") is None:  # refuse now, not after --overwrite cleared out_dir
        raise BadInput(f"--workers {settings.workers}: parallel search needs Ray; pip install 'dfwe[ray]' "
                       "(or 'ray[default]'), or use --workers 1")
    if settings.space == "task_arithmetic" and base is None:
        raise BadInput("--space task_arithmetic needs --base (the checkpoint task vectors are measured from)")
    config = {"checkpoints": [str(p) for p in paths], "dev": str(dev_file), "base": str(base) if base else None,
              "search": settings.model_dump(mode="json"), "seed": seed, "max_length": max_length,
              "context_turns": context_turns}
    spec = FoldSpec(tuple(Path(p) for p in paths), dev, base=base, device=device)
    fold = spec.build()
    claim_output_dir(out_dir, config, resume, overwrite)
    search_space, result = search_weights([fold], settings, seed, out_dir / "journal.sqlite", specs=[spec])
    best = result.best
    fold.merge(search_space.method, best.weights)
    names = [str(p) for p in paths]
    _, prep = model_task(Path(paths[0]))
    export_merged(fold.model, load_tokenizer(Path(paths[0])), out_dir / "merged", best.weights, names,
                  search_space.method, fold.space.grouping.labels, prep, dev.task)
    write_mergekit_yaml(out_dir / "mergekit.yaml", mergekit_config(fold.space, best.weights, list(paths),
                                                                   search_space.method, base, relative_to=out_dir))
    (out_dir / "plots").mkdir(exist_ok=True)
    plot_trace([r.objective for r in result.full], result.best_so_far, settings.objective,
               out_dir / "plots" / "search_trace.png")
    results = {
        "config": config,
        "task": dev.task.describe(),
        "methods": {"dfwe": {"dev": score(fold.logits(dev), dev), "weights": np.atleast_2d(best.weights).tolist(),
                             "ingredients": names, "groups": list(fold.space.grouping.labels),
                             "method": search_space.method}},
        "search": {"evaluations": result.candidates, "full_evaluations": len(result.full),
                   "full_evaluations_saved": result.full_evaluations_saved, "best_objective": best.objective,
                   "best_weights": np.atleast_2d(best.weights).tolist(), "optimizer": result.optimizer,
                   "seed": result.seed, "objective": settings.objective,
                   "trace": [r.objective for r in result.full], "best_so_far": result.best_so_far},
    }
    atomic_write_json(out_dir / "results.json", results)
    return results
