"""``dfwe search``: search merge weights for given fine-tuned checkpoints on a dev file."""

from __future__ import annotations

from dataclasses import replace
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Sequence

from dfwe.checkpoints import load_tokenizer, model_task
from dfwe.data.metrics import score
from dfwe.data.sets import ExampleSet
from dfwe.data.shapes import get_shape
from dfwe.data.tasks import read_jsonl
from dfwe.errors import BadInput
from dfwe.io import claim_output_dir
from dfwe.merge.fold import FoldSpec
from dfwe.report.write import write_outputs
from dfwe.runtime import RuntimeOptions
from dfwe.search.run import SearchConfig, SearchOutcome, search_weights


def read_dev(dev_file: Path, checkpoint: Path, max_length: int | None, context_turns: int | None) -> ExampleSet:
    """The dev file as the checkpoints' task, prepared as they were trained (``dfwe.json``; arguments override)."""
    task, prep = model_task(checkpoint)
    prep = replace(prep, **{k: v for k, v in {"max_length": max_length, "context_turns": context_turns}.items()
                            if v is not None})
    examples = read_jsonl(dev_file, prep.context_turns, task.shape, task.labels)
    return ExampleSet(task, examples, get_shape(task.shape).encode(examples, load_tokenizer(checkpoint), task, prep))


def search_checkpoints(paths: Sequence[Path], dev_file: Path, settings: SearchConfig, seed: int, out_dir: Path,
                       resume: bool = False, base: Path | None = None, max_length: int | None = None,
                       context_turns: int | None = None, runtime: RuntimeOptions = RuntimeOptions(),
                       overwrite: bool = False) -> dict[str, Any]:
    """Search weights for ``paths`` on ``dev_file``; writes ``results.json``, ``journal.sqlite``, ``merged/``,
    ``mergekit.yaml`` and ``report.md``.

    An ``out_dir`` that already holds files is continued on ``resume`` (same checkpoints, dev file and
    settings; ``runtime`` may differ), replaced on ``overwrite``, and otherwise refused as bad input; inputs are
    checked first.
    """
    if dev_file.name.startswith("test"):
        raise BadInput(f"--dev {dev_file}: looks like a test split; the search objective may only use dev data")
    dev = read_dev(dev_file, Path(paths[0]), max_length, context_turns)
    if runtime.workers > 1 and find_spec("ray") is None:  # refuse now, not after --overwrite cleared out_dir
        raise BadInput(f"--workers {runtime.workers}: parallel search needs Ray; pip install 'dfwe[ray]' "
                       "(or 'ray[default]'), or use --workers 1")
    if settings.space == "task_arithmetic" and base is None:
        raise BadInput("--space task_arithmetic needs --base (the checkpoint task vectors are measured from)")
    config = {"checkpoints": [str(p) for p in paths], "dev": str(dev_file), "base": str(base) if base else None,
              "search": settings.model_dump(mode="json"), "seed": seed, "max_length": max_length,
              "context_turns": context_turns, "runtime": runtime.model_dump(mode="json")}
    spec = FoldSpec(tuple(Path(p) for p in paths), dev, base=base, device=runtime.device)
    fold = spec.build()
    claim_output_dir(out_dir, config, resume, overwrite)
    space, result = search_weights([fold], settings, seed, out_dir / "journal.sqlite", specs=[spec], runtime=runtime)
    search = SearchOutcome(space, result, fold.space.grouping.labels)
    fold.merge(space.method, search.weights)
    results = {
        "config": config,
        "task": {"name": dev.task.name, **dev.task.describe()},
        "methods": {"dfwe": {"dev": score(fold.logits(dev, runtime.eval_batch_size), dev),
                             "weights": search.weights.tolist(), "ingredients": config["checkpoints"],
                             "groups": list(search.groups), "method": space.method}},
        "search": search.summary(settings.objective),
    }
    write_outputs(out_dir, results, fold, base)
    return results
