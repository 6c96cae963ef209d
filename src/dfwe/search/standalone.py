"""``dfwe search``: search merge weights for given fine-tuned checkpoints on a dev file."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from dfwe.config import SearchConfig
from dfwe.data.encode import encode
from dfwe.data.tasks import read_jsonl
from dfwe.errors import BadInput
from dfwe.eval.metrics import score_logits
from dfwe.eval.predict import predict_logits
from dfwe.io import atomic_write_json, claim_output_dir
from dfwe.merge.export import export_merged, mergekit_config, write_mergekit_yaml
from dfwe.models import label_names, load_tokenizer
from dfwe.report.write import plot_trace
from dfwe.search.objective import FoldSpec
from dfwe.search.run import search_weights


def search_checkpoints(paths: Sequence[Path], dev_file: Path, settings: SearchConfig, seed: int, out_dir: Path,
                       resume: bool = False, base: Path | None = None, max_length: int = 128,
                       context_turns: int = 3, device: str = "auto") -> dict[str, Any]:
    """Search weights for ``paths`` on ``dev_file``; writes ``results.json``, ``journal.sqlite``, ``merged/``."""
    if dev_file.name.startswith("test"):
        raise BadInput(f"--dev {dev_file}: looks like a test split; the search objective may only use dev data")
    examples = read_jsonl(dev_file, context_turns)
    if settings.space == "task_arithmetic" and base is None:
        raise BadInput("--space task_arithmetic needs --base (the checkpoint task vectors are measured from)")
    label_index = {name: i for i, name in enumerate(label_names(Path(paths[0])))}
    for example in examples:
        if example.label not in label_index:
            raise BadInput(f"{dev_file}: label '{example.label}' (id {example.id}) is not one of the checkpoints' "
                           f"labels ({', '.join(label_index)})")
    tokenizer = load_tokenizer(Path(paths[0]))
    dev = encode(examples, tokenizer, label_index, max_length)
    config = {"checkpoints": [str(p) for p in paths], "dev": str(dev_file), "base": str(base) if base else None,
              "search": settings.model_dump(mode="json"), "seed": seed}
    spec = FoldSpec(tuple(Path(p) for p in paths), dev, base=base, device=device)
    fold = spec.build()
    space, model = fold.space, fold.model
    claim_output_dir(out_dir, config, resume, overwrite=False)
    search_space, result = search_weights([fold], settings, seed, out_dir / "journal.sqlite", specs=[spec])
    best = result.best
    space.apply(search_space.method, best.weights)
    dev_scores = score_logits(predict_logits(model, dev), dev.labels.numpy(), len(label_index))
    names = [str(p) for p in paths]
    export_merged(model, tokenizer, out_dir / "merged", best.weights, names, search_space.method,
                  space.grouping.labels)
    write_mergekit_yaml(out_dir / "mergekit.yaml",
                        mergekit_config(space, best.weights, list(paths), search_space.method, base))
    (out_dir / "plots").mkdir(exist_ok=True)
    plot_trace([r.objective for r in result.full], result.best_so_far, settings.objective,
               out_dir / "plots" / "search_trace.png")
    results = {
        "config": config,
        "methods": {"dfwe": {"dev": dev_scores, "weights": np.atleast_2d(best.weights).tolist(), "ingredients": names,
                             "groups": list(space.grouping.labels), "method": search_space.method}},
        "search": {"evaluations": result.candidates, "full_evaluations": len(result.full),
                   "full_evaluations_saved": result.full_evaluations_saved, "best_objective": best.objective,
                   "best_weights": np.atleast_2d(best.weights).tolist(), "optimizer": result.optimizer,
                   "seed": result.seed, "objective": settings.objective,
                   "trace": [r.objective for r in result.full], "best_so_far": result.best_so_far},
    }
    atomic_write_json(out_dir / "results.json", results)
    return results
