"""The ``dfwe`` command line: parse, validate, call the library; nothing else lives here.

Exit codes: 0 success; 2 bad input (one line on stderr naming the file, key or value); 1 internal error.
argparse rather than typer/click: the command contracts take several values after one option
(``--weights 0.2 0.8``, ``--seeds 0 1 2``, ``--sources a b``), which click options cannot.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from importlib import import_module
from pathlib import Path
from typing import Any, Sequence

import yaml

from dfwe.errors import BadInput
from dfwe.io import check_output_dir

DEFAULT_FRIENDS = Path("../shared/data/friends")


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"dfwe: error: {message} (see dfwe {self.prog.split()[-1]} --help)", file=sys.stderr)
        raise SystemExit(2)


def _version() -> str:
    """The installed distribution's version, or the package's own when it is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dfwe")
    except PackageNotFoundError:
        from dfwe import __version__

        return __version__


def _quiet_third_party() -> None:
    """Quiet the libraries the commands drive: the CLI's own choice, never made by ``import dfwe``.

    Tokenizers stop warning about forked workers and transformers only logs errors, without progress bars.
    Hub access is left alone (no ``HF_HUB_OFFLINE``): models load from local folders either way.
    """
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """``["search.budget=20", ...]`` (``--set`` values) as dotted-key overrides with YAML-typed values."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise BadInput(f"--set {pair}: expected KEY=VALUE, e.g. --set search.budget=20")
        try:
            out[key] = yaml.safe_load(value)
        except yaml.YAMLError as error:
            problem = getattr(error, "problem", None) or str(error).splitlines()[0]
            raise BadInput(f"--set {pair}: the value is not valid YAML ({problem}); quote a string, e.g. "
                           f"--set '{key}=\"...\"'") from None
    return out


def _print_table(results: dict[str, Any]) -> None:
    from dfwe.report.tables import results_table

    print(results_table(results["methods"], results["task"]["metric"]))


def cmd_demo(args: argparse.Namespace) -> None:
    from dfwe.config import demo_config_path, load_config
    from dfwe.pipeline import run

    config = load_config(demo_config_path(), parse_overrides(args.set))
    results = run(config, args.out, resume=args.resume, overwrite=args.overwrite)
    _print_table(results)
    print(f"\nresults, report and merged model in {args.out}/")


def cmd_run(args: argparse.Namespace) -> None:
    from dfwe.config import load_config
    from dfwe.pipeline import run

    overrides = parse_overrides(args.set)
    if args.data_dir is not None:
        overrides["data.data_dir"] = str(args.data_dir)
    config = load_config(args.config, overrides)
    results = run(config, args.out, resume=args.resume, overwrite=args.overwrite, cache=args.cache)
    _print_table(results)
    print(f"\nresults, report and merged model in {args.out}/")


def cmd_bench(args: argparse.Namespace) -> None:
    from dfwe.bench import run_bench, run_suite
    from dfwe.config import feta_config_path, friends_config_path, load_config
    from dfwe.report.tables import summary_table

    if args.suite is not None:  # every task of the suite as the target in turn
        config = load_config(args.config or feta_config_path(), parse_overrides(args.set))
        results = run_suite(config, args.suite, list(args.seeds), args.out, targets=args.targets,
                            sources=args.sources, resume=args.resume, overwrite=args.overwrite, cache=args.cache)
        print((args.out / "report.md").read_text())
        return
    if args.targets:
        raise BadInput("--targets needs --suite (a single benchmark takes --target)")
    overrides = {**parse_overrides(args.set), "data.data_dir": str(args.data_dir or DEFAULT_FRIENDS),
                 "data.target": args.target or "meld_emotion",
                 "data.sources": list(args.sources or ["meld_sentiment", "emorynlp_emotion"])}
    if args.shots is not None:
        overrides["data.shots"] = args.shots
    config = load_config(args.config or friends_config_path(), overrides)
    results = run_bench(config, list(args.seeds), args.out, resume=args.resume, overwrite=args.overwrite,
                        cache=args.cache)
    print(summary_table(results["summary"], results["task"]["metric"]))
    print(f"\nper-seed runs, results.json and report.md in {args.out}/")


def cmd_merge(args: argparse.Namespace) -> None:
    from dfwe.commands.merge import merge_checkpoints

    merge_checkpoints(args.checkpoints, args.weights, args.out, base=args.base, method=args.method,
                      granularity=args.granularity, block_size=args.block_size, density=args.density, seed=args.seed,
                      overwrite=args.overwrite)
    print(f"merged model written to {args.out}/ (mergekit recipe in {args.out}/mergekit.yaml)")


def cmd_search(args: argparse.Namespace) -> None:
    from dfwe.commands.search import search_checkpoints
    from dfwe.runtime import RuntimeOptions
    from dfwe.schema import validated
    from dfwe.search.run import SearchConfig

    settings = validated(SearchConfig, {"optimizer": args.optimizer, "budget": args.budget, "space": args.space,
                                        "granularity": args.granularity, "block_size": args.block_size,
                                        "objective": args.objective, "penalty": args.penalty,
                                        "penalty_strength": args.penalty_strength,
                                        "batch": args.batch or max(args.workers, 9 if args.halving else 1),
                                        "halving": args.halving}, "search")
    runtime = validated(RuntimeOptions, {"workers": args.workers, "ray_address": args.ray_address}, "runtime")
    results = search_checkpoints(args.checkpoints, args.dev, settings, args.seed, args.out, resume=args.resume,
                                 base=args.base, max_length=args.max_length, context_turns=args.context_turns,
                                 runtime=runtime, overwrite=args.overwrite, train_file=args.train, stride=args.stride,
                                 probe_c=args.probe_c)
    print(json.dumps(results["search"] | {"trace": None, "best_so_far": None}, default=str))


def cmd_evaluate(args: argparse.Namespace) -> None:
    from dfwe.commands.evaluate import evaluate_model

    scores = evaluate_model(args.model_dir, args.task, args.split, max_length=args.max_length,
                            context_turns=args.context_turns, stride=args.stride)
    print(json.dumps(scores, indent=2))


def cmd_mergekit(args: argparse.Namespace) -> None:
    from dfwe.commands.mergekit import run_mergekit

    run_mergekit(args.recipe, args.out, args.ingredients_dir, overwrite=args.overwrite)
    print(f"mergekit wrote {args.out}/")


class _Names(Sequence[str]):
    """A registry's names, read when argparse first checks a value or prints help, so that building the parser
    imports nothing heavy (the shape registry, for one, imports the model classes)."""

    def __init__(self, module: str, registry: str):
        self.module, self.registry = module, registry

    def _names(self) -> tuple[str, ...]:
        return tuple(getattr(import_module(self.module), self.registry))

    def __getitem__(self, index):  # type: ignore[override]
        return self._names()[index]

    def __len__(self) -> int:
        return len(self._names())


def _choice(p: argparse.ArgumentParser, flag: str, default: str, module: str, registry: str, what: str) -> None:
    """``flag`` takes one of the names of ``module.registry`` (listed in its help)."""
    p.add_argument(flag, default=default, choices=_Names(module, registry), metavar=flag.lstrip("-").upper(),
                   help=f"{what}: %(choices)s (default %(default)s)")


def build_parser() -> argparse.ArgumentParser:
    """The command line; every list of choices comes from the registry that implements it."""
    parser = _Parser(prog="dfwe", description="Derivative Free Weight-space Ensembling")
    parser.add_argument("--version", action="version", version=f"dfwe {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def preprocessing(p: argparse.ArgumentParser) -> None:
        # a plain transformers checkpoint records none of these: Preprocessing's defaults (128, 3, 64) apply
        p.add_argument("--max-length", type=int, help="tokens per input (default: as the model's dfwe.json records, "
                                                      "else 128)")
        p.add_argument("--context-turns", type=int, help="preceding dialogue turns read with an utterance (default: "
                                                         "as dfwe.json records, else 3)")
        p.add_argument("--stride", type=int, help="span tasks: tokens shared by consecutive windows of a long "
                                                  "context (default: as dfwe.json records, else 64)")

    def outputs(p: argparse.ArgumentParser) -> None:
        p.add_argument("--out", type=Path, required=True, help="output directory")
        p.add_argument("--resume", action="store_true", help="continue the run already in --out")
        p.add_argument("--overwrite", action="store_true", help="replace the run already in --out")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value, e.g. --set search.budget=20 (repeatable)")

    p = sub.add_parser("demo", help="the whole method on the built-in offline suite (minutes on a laptop CPU)")
    outputs(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("run", help="the whole method from a YAML config")
    p.add_argument("config", type=Path)
    p.add_argument("--data-dir", type=Path, help="override data.data_dir")
    p.add_argument("--cache", type=Path, help="share experts and target fine-tunes across runs through this folder")
    outputs(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("bench", help="every baseline and dfwe, every seed, mean and std (--suite: every target)")
    p.add_argument("--data-dir", type=Path, help=f"task folders (default {DEFAULT_FRIENDS})")
    p.add_argument("--target", help="target task (default meld_emotion)")
    p.add_argument("--sources", nargs="+", help="source tasks (default: meld_sentiment emorynlp_emotion; with "
                                                 "--suite: every other task of the suite)")
    p.add_argument("--shots", type=int, help="k examples per class (default: the config's)")
    p.add_argument("--suite", type=Path, help="a suite folder (FETA-Friends): every task as the target in turn")
    p.add_argument("--targets", nargs="+", help="with --suite: only these targets")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--config", type=Path,
                   help="base config (default: configs/friends.yaml, with --suite configs/feta_friends.yaml)")
    p.add_argument("--cache", type=Path, help="share experts and fine-tunes across benchmarks (e.g. k=8 and k=32)")
    outputs(p)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("merge", help="apply weights to checkpoints and write a model")
    p.add_argument("checkpoints", type=Path, nargs="+")
    p.add_argument("--weights", type=float, nargs="+", required=True,
                   help="one weight per checkpoint, or groups x checkpoints values for --granularity")
    p.add_argument("--base", type=Path, help="common base checkpoint (task arithmetic)")
    _choice(p, "--method", "linear", "dfwe.merge.methods", "METHODS", "merge method")
    p.add_argument("--density", type=float, default=0.5, help="ties/dare: fraction of each task vector kept")
    p.add_argument("--seed", type=int, default=0, help="dare: seed of the random masks")
    _choice(p, "--granularity", "model", "dfwe.merge.groups", "GRANULARITIES", "parameters that share a weight")
    p.add_argument("--block-size", type=int, default=2)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--overwrite", action="store_true", help="replace what --out already holds")
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser("search", help="search merge weights for fine-tuned checkpoints on a dev file")
    p.add_argument("checkpoints", type=Path, nargs="+")
    p.add_argument("--dev", type=Path, required=True, help="dev examples (JSONL, Friends or text format)")
    p.add_argument("--train", type=Path, help="refit the merged model's head on these examples for every candidate "
                                              "(default: heads are averaged with the bodies)")
    p.add_argument("--probe-c", type=float, default=1.0, help="with --train: inverse L2 strength of the refit head")
    p.add_argument("--budget", type=int, default=60,
                   help="candidates the optimiser proposes; the uniform soup is scored after them")
    _choice(p, "--optimizer", "cma", "dfwe.search.optimizers", "OPTIMIZERS", "derivative-free optimiser")
    _choice(p, "--space", "simplex", "dfwe.search.spaces", "SPACES", "search space")
    _choice(p, "--granularity", "model", "dfwe.merge.groups", "GRANULARITIES", "parameters that share a weight")
    p.add_argument("--block-size", type=int, default=2)
    _choice(p, "--objective", "loss", "dfwe.data.shapes", "METRICS",
            "dev score to minimise (metrics are maximised): the losses, or a metric of the checkpoints' task shape")
    _choice(p, "--penalty", "none", "dfwe.search.objective", "PENALTIES", "pull on the weights")
    p.add_argument("--penalty-strength", type=float, default=0.0)
    p.add_argument("--batch", type=int, default=None, help="candidates asked together (default: --workers, or 9 with --halving)")
    p.add_argument("--workers", type=int, default=1, help="Ray workers scoring candidates in parallel")
    p.add_argument("--ray-address", help="join this Ray cluster (default: start a local one)")
    p.add_argument("--halving", action="store_true", help="successive halving: score on a third of dev first")
    p.add_argument("--base", type=Path, help="common base checkpoint (task_arithmetic space)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    preprocessing(p)
    p.add_argument("--resume", action="store_true", help="continue the search journalled in --out")
    p.add_argument("--overwrite", action="store_true", help="replace the search already in --out")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("evaluate", help="score a saved model on a task split")
    p.add_argument("model_dir", type=Path)
    p.add_argument("--task", type=Path, required=True, help="task folder with train/dev/test.jsonl")
    p.add_argument("--split", default="test", choices=["train", "dev", "test"])
    preprocessing(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("mergekit", help="run a mergekit.yaml that dfwe wrote (dfwe's model classes registered)")
    p.add_argument("recipe", type=Path, help="the mergekit.yaml; its relative paths are relative to its folder")
    p.add_argument("out", type=Path, help="output folder (mergekit's)")
    p.add_argument("--ingredients-dir", type=Path,
                   help="look the recipe's models up here by folder name (a run moved away from its cache)")
    p.add_argument("--overwrite", action="store_true", help="replace what OUT already holds (once mergekit is done)")
    p.set_defaults(func=cmd_mergekit)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    _quiet_third_party()
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "out", None) is not None:
            check_output_dir(args.out)  # every command with --out: fail before any work, not at the first write
        args.func(args)
    except BadInput as error:
        print(f"dfwe: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dfwe: interrupted; rerun the same command with --resume to continue", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
