"""Compare two run folders of the same config: are they the same run?

``results.json`` is compared whole (timings aside; the config by its recipe and its runtime options, a config
saved before the ``runtime`` section existed mapped to it), every tensor of ``merged/`` bit for bit, the search
journals row by row (scoring seconds aside, their fingerprints with each run's own folder in its paths), and
every other output file byte for byte (``merged/config.json`` with each run's own folder in its paths).

    python benchmarks/compare_runs.py runs/demo-before runs/demo-after

Prints what differs and exits 0 either way; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
from pathlib import Path

import torch
from safetensors.torch import load_file

# where each option the runtime section holds lived before it existed
OLD_RUNTIME = {"device": ("device",), "threads": ("threads",), "workers": ("search", "workers"),
               "ray_address": ("search", "ray_address"), "search_batch_size": ("search", "batch_size"),
               "eval_batch_size": ("eval", "batch_size")}


def split_config(config: dict) -> tuple[dict, dict]:
    """``(recipe, runtime)`` of a saved config, in the layout with a ``runtime`` section."""
    config = json.loads(json.dumps(config))
    if "runtime" in config:
        return config, config.pop("runtime")
    runtime = {}
    for name, (*sections, key) in OLD_RUNTIME.items():
        holder = config
        for section in sections:
            holder = holder[section]
        runtime[name] = holder.pop(key)
    return config, runtime


def journal(path: Path, folder: Path) -> tuple[list, list]:
    with sqlite3.connect(str(path)) as db:
        meta = [value.replace(str(folder), "<run>") for (value,) in db.execute("SELECT value FROM meta")]
        rows = db.execute("SELECT idx, x, weights, objective, metrics, fidelity, worker FROM candidates ORDER BY idx")
        return meta, rows.fetchall()


def outputs(folder: Path) -> dict[str, Path]:
    """Every file a run wrote, its cache (``work/``) aside."""
    return {str(p.relative_to(folder)): p for p in sorted(folder.rglob("*"))
            if p.is_file() and p.relative_to(folder).parts[0] != "work"}


def compare(a: Path, b: Path) -> list[str]:
    differences = []
    ra, rb = (json.loads((folder / "results.json").read_text()) for folder in (a, b))
    (recipe_a, runtime_a), (recipe_b, runtime_b) = (split_config(r.pop("config")) for r in (ra, rb))
    for r in (ra, rb):
        r.pop("timing_seconds", None)
    differences += [f"config: {part}" for part, same in (("recipe", recipe_a == recipe_b),
                                                         ("runtime", runtime_a == runtime_b)) if not same]
    differences += [f"results.json: {key}" for key in sorted(set(ra) | set(rb)) if ra.get(key) != rb.get(key)]
    tensors = [load_file(str(folder / "merged" / "model.safetensors")) for folder in (a, b)]
    if tensors[0].keys() != tensors[1].keys() or not all(torch.equal(tensors[0][k], tensors[1][k]) for k in tensors[0]):
        differences.append("merged/model.safetensors: tensors differ")
    files_a, files_b = outputs(a), outputs(b)
    differences += [f"only in one run: {name}" for name in sorted(set(files_a) ^ set(files_b))]
    for name in sorted(set(files_a) & set(files_b)):
        if name in ("results.json", "config.yaml", "merged/model.safetensors"):
            continue
        if name.endswith(".sqlite"):
            same = journal(files_a[name], a) == journal(files_b[name], b)
        elif name == "merged/config.json":
            same = (files_a[name].read_text().replace(str(a), "<run>")
                    == files_b[name].read_text().replace(str(b), "<run>"))
        else:
            same = files_a[name].read_bytes() == files_b[name].read_bytes()
        if not same:
            differences.append(f"{name}: differs")
    return differences


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    args = parser.parse_args()
    differences = compare(args.a, args.b)
    print("\n".join(differences) if differences else
          f"same run: results.json (timings aside), merged/ tensors, journals and {len(outputs(args.a))} output files")


if __name__ == "__main__":
    main()
