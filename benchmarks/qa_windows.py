"""Issue 19, item 3: does training question answering on a sample of its answer-less windows hurt it?

FETA-Friends' question answering as the target, one seed, the suite's recipe at the chosen CPU settings: the
base's fine-tune (``base-ft``, the baseline every transfer delta is measured against) trained with
``data.answerless_windows`` at each given fraction, scored on the few-sample dev set and on validation (the
official dev split less the few-sample dev examples), with the seconds its fine-tune took and the train windows
it read. Test is never read. Prints a table, writes JSON; asserts nothing.

    python benchmarks/qa_windows.py --suite ../shared/data/feta_friends --cache runs/cache --fractions 1.0 0.25 \
        --set model.trainable_layers=1 --set experts.train.lr=5e-4 --json benchmarks/results/qa_windows.json

A fraction whose fine-tune is already in ``--cache`` (1.0 after a suite run) is read back, not retrained; its
seconds are those its training log recorded.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from dfwe.bench import suite_target_config, suite_tasks  # noqa: E402
from dfwe.checkpoints import load_model  # noqa: E402
from dfwe.cli import parse_overrides  # noqa: E402
from dfwe.config import feta_config_path, load_config  # noqa: E402
from dfwe.data.metrics import metric_stats, score  # noqa: E402
from dfwe.forward import predict_logits  # noqa: E402
from dfwe.pipeline import trunk_inputs  # noqa: E402
from dfwe.runtime import resolve_device  # noqa: E402
from dfwe.stats import paired_difference  # noqa: E402
from dfwe.train.target import BASE_FT, TRAIN_LOG, _origin, fine_tune_ingredient  # noqa: E402

TARGET = "question_answering"


def measure(config, cache: Path) -> tuple[dict, dict]:
    """base-ft of the QA target under ``config``: its dev and validation scores, train windows and seconds; and
    its per-example statistics on both sets."""
    device = resolve_device(config.runtime.device)
    base, data, depth = trunk_inputs(config, cache, device)
    _, origin_key, heads = _origin(config.target, base, data.train, config.seed, cache / "ingredients", data.prep)
    ingredient = fine_tune_ingredient(BASE_FT, None, config.target, base, data.train, data.dev, heads, origin_key,
                                      config.seed, device, cache / "ingredients", data.prep)
    model = load_model(ingredient.folder).to(device)
    log = json.loads((ingredient.folder / TRAIN_LOG).read_text())
    sets = {"dev": data.dev, "validation": data.validation}
    logits = {name: predict_logits(model, s.shape, s.encoded) for name, s in sets.items()}
    return ({"train_windows": len(data.train.encoded), "train_questions": len(data.train.examples),
             "fine_tune_seconds": log["seconds"], "kept_epoch": log["kept_epoch"],
             **{name: score(logits[name], s) for name, s in sets.items()}},
            {name: metric_stats(logits[name], s) for name, s in sets.items()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", type=Path, default=Path("../shared/data/feta_friends"))
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--fractions", type=float, nargs="+", default=[1.0, 0.25])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()
    overrides = parse_overrides(args.set)
    others = [t for t in suite_tasks(args.suite) if t != TARGET]
    rows, stats = {}, {}
    for fraction in args.fractions:
        chosen = load_config(feta_config_path(), {**overrides, "seed": args.seed, "eval.validation": True,
                                                  "data.answerless_windows": fraction})
        torch.set_num_threads(chosen.runtime.threads or torch.get_num_threads())
        # one source: the data stage needs one, and base-ft reads none of them
        rows[str(fraction)], stats[str(fraction)] = measure(suite_target_config(chosen, args.suite, TARGET, others[:1]),
                                                            args.cache)
    first = str(args.fractions[0])
    for fraction in rows:  # each fraction minus the first, paired over the same questions
        rows[fraction]["minus_first"] = {name: paired_difference(stats[fraction][name], stats[first][name], 1000,
                                                                 args.seed) for name in ("dev", "validation")}
    print(f"| answerless_windows | train windows | fine-tune s | dev token F1 | dev EM | validation token F1 | "
          f"validation EM | validation token F1 minus {first}'s |\n| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for fraction, row in rows.items():
        diff = row["minus_first"]["validation"]["token_f1"]
        print(f"| {fraction} | {row['train_windows']} | {row['fine_tune_seconds']:.0f} | {row['dev']['token_f1']:.3f} | "
              f"{row['dev']['exact_match']:.3f} | {row['validation']['token_f1']:.3f} | "
              f"{row['validation']['exact_match']:.3f} | {diff['diff']:+.3f} [{diff['ci'][0]:+.3f}, {diff['ci'][1]:+.3f}] |")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"target": TARGET, "seed": args.seed, "settings": overrides, "rows": rows},
                                    indent=2))


if __name__ == "__main__":
    main()
