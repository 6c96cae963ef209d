"""``dfwe search``: search merge weights for given fine-tuned checkpoints on a dev file."""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path
from typing import Any, Sequence

from dfwe.checkpoints import check_one_task, load_tokenizer, model_task
from dfwe.data.encode import Preprocessing
from dfwe.data.metrics import score
from dfwe.data.sets import ExampleSet
from dfwe.data.shapes import get_shape
from dfwe.data.tasks import read_jsonl
from dfwe.errors import BadInput
from dfwe.eval.baselines import uniform_weights
from dfwe.forward import InverseL2
from dfwe.io import output_folder
from dfwe.merge.fold import FoldSpec, HeadRefit
from dfwe.report.write import write_outputs
from dfwe.runtime import RuntimeOptions
from dfwe.schema import Seed, checked
from dfwe.search.run import SearchConfig, SearchOutcome, search_weights


def read_examples(path: Path, checkpoint: Path, prep: Preprocessing, flag: str) -> ExampleSet:
    """A split file as the checkpoints' task, prepared as ``prep`` says (a label they lack is bad input)."""
    if path.name.startswith("test"):
        raise BadInput(f"{flag} {path}: looks like a test split; the search may only read train and dev data")
    task, _ = model_task(checkpoint)
    examples = read_jsonl(path, prep.context_turns, task.shape, task.labels)
    return ExampleSet(task, examples, get_shape(task.shape).encode(examples, load_tokenizer(checkpoint), task, prep))


def search_checkpoints(paths: Sequence[Path], dev_file: Path, settings: SearchConfig, seed: int, out_dir: Path,
                       resume: bool = False, base: Path | None = None, max_length: int | None = None,
                       context_turns: int | None = None, runtime: RuntimeOptions = RuntimeOptions(),
                       overwrite: bool = False, train_file: Path | None = None, stride: int | None = None,
                       probe_c: float = 1.0) -> dict[str, Any]:
    """Search weights for ``paths`` on ``dev_file``; writes ``results.json``, ``journal.sqlite``, ``merged/``,
    ``mergekit.yaml`` and ``report.md``. After its ``settings.budget`` candidates the search also scores the
    uniform soup of ``paths`` and keeps it where it is better on dev (``search.kept``).

    ``paths`` are dfwe's folders or plain transformers task checkpoints of one architecture and one task.
    Inputs are prepared as the first checkpoint's ``dfwe.json`` says (a plain checkpoint without one:
    :class:`~dfwe.data.encode.Preprocessing`'s defaults), ``max_length`` / ``context_turns`` / ``stride``
    overriding. Heads are averaged with the bodies, or, with ``train_file``, refit on every candidate's merged
    body (a probe of inverse L2 strength ``probe_c``) on those examples; the ``fisher`` space measures each
    checkpoint's Fisher on them too.

    An ``out_dir`` that already holds files is continued on ``resume`` (same checkpoints, dev file and
    settings; ``runtime`` may differ), replaced on ``overwrite`` once the new search has succeeded, and
    otherwise refused as bad input; every input is checked first.
    """
    paths = [Path(p) for p in paths]
    checked(Seed, seed, "--seed")
    checked(InverseL2, probe_c, "--probe-c")
    check_one_task(paths)
    prep = model_task(paths[0])[1].overridden("command line", max_length=max_length, context_turns=context_turns,
                                              stride=stride)
    dev = read_examples(dev_file, paths[0], prep, "--dev")
    train = read_examples(train_file, paths[0], prep, "--train") if train_file is not None else None
    if runtime.workers > 1 and find_spec("ray") is None:  # refuse now, not after --overwrite cleared out_dir
        raise BadInput(f"--workers {runtime.workers}: parallel search needs Ray; pip install 'dfwe[ray]' "
                       "(or 'ray[default]'), or use --workers 1")
    if settings.space == "task_arithmetic" and base is None:
        raise BadInput("--space task_arithmetic needs --base (the checkpoint task vectors are measured from)")
    if settings.space == "fisher" and train is None:
        raise BadInput("--space fisher needs --train (the examples each checkpoint's Fisher is measured on)")
    config = {"checkpoints": [str(p) for p in paths], "dev": str(dev_file), "base": str(base) if base else None,
              "search": settings.model_dump(mode="json"), "seed": seed, "max_length": max_length,
              "context_turns": context_turns, "runtime": runtime.model_dump(mode="json"),
              **({"train": str(train_file), "probe_c": probe_c} if train_file is not None else {}),
              **({"stride": stride} if stride is not None else {})}
    spec = FoldSpec(tuple(paths), dev, base=base, device=runtime.device,
                    refit=HeadRefit(train, probe_c) if train is not None else None,
                    fisher_data=train if settings.space == "fisher" else None, fisher_seed=seed)
    fold = spec.build()
    with output_folder(out_dir, config, resume, overwrite) as out:
        # the plain average is scored after the budget (untold to the optimiser), so the result is never worse on
        # dev than the soup anyone would try first; `search.kept` says when it wins
        space, result = search_weights([fold], settings, seed, out / "journal.sqlite", specs=[spec], runtime=runtime,
                                       references={"uniform-soup": uniform_weights(len(paths))})
        search = SearchOutcome(space, result, fold.space.grouping.labels)
        fold.merge(search.method, search.weights)
        results = {
            "config": config,
            "task": {"name": dev.task.name, **dev.task.describe()},
            "methods": {"dfwe": {"dev": score(fold.logits(dev, runtime.eval_batch_size), dev),
                                 "weights": search.weights.tolist(), "ingredients": config["checkpoints"],
                                 "groups": list(search.groups), "method": search.method,
                                 "head": "refit" if train is not None else "average"}},
            "search": search.summary(settings.objective),
        }
        write_outputs(out, results, fold, base, prep)
    return results
