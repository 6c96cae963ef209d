"""What makes ``dfwe demo`` give other numbers on another machine: runs the demo from scratch under settings
that differ the way two machines of one kind can (thread count, the CPU instruction set PyTorch's kernels
use, MKL's code path) and compares each ``results.json`` (timings aside) with a reference run.

    python benchmarks/determinism.py --out runs/determinism --json benchmarks/results/determinism.json

Prints a table and writes JSON; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

# Each setting is the environment and the config overrides of one run; the first is the reference (the demo as
# shipped: one PyTorch thread, this CPU's best kernels).
SETTINGS: dict[str, tuple[dict[str, str], list[str]]] = {
    "reference (threads: 1, native kernels)": ({}, []),
    "same again": ({}, []),
    "threads: 2": ({}, ["runtime.threads=2"]),
    "AVX2 kernels (ATEN_CPU_CAPABILITY=avx2)": ({"ATEN_CPU_CAPABILITY": "avx2"}, []),
    "MKL_CBWR=COMPATIBLE": ({"MKL_CBWR": "COMPATIBLE"}, []),
    "AVX2 kernels + MKL_CBWR=COMPATIBLE": ({"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "COMPATIBLE"}, []),
}
PINNED = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "ATEN_CPU_CAPABILITY", "MKL_CBWR")


def demo(out: Path, env: dict[str, str], extra: list[str], reuse: bool) -> tuple[dict, float | None]:
    """The demo's results.json (timings and config aside) under ``env``, and its wall seconds (None: reused)."""
    clean = {k: v for k, v in os.environ.items() if k not in PINNED}
    began = time.perf_counter()
    ran = not (reuse and (out / "results.json").is_file())
    if ran:
        done = subprocess.run([sys.executable, "-m", "dfwe.cli", "demo", "--out", str(out), "--overwrite", *extra],
                              capture_output=True, text=True, env={**clean, "DFWE_PROGRESS": "0", **env})
        if done.returncode != 0:
            raise SystemExit(done.stderr[-3000:])
    seconds = time.perf_counter() - began if ran else None
    results = json.loads((out / "results.json").read_text())
    results.pop("timing_seconds")
    results.pop("config")  # differs by the setting's own overrides
    return results, seconds


def machine() -> dict[str, str]:
    """The CPU and the kernels PyTorch picks on it: what a reader compares against their own machine."""
    import platform

    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"cpu": cpu, "cores": str(os.cpu_count()), "torch": torch.__version__,
            "kernels": torch.backends.cpu.get_cpu_capability()}


def first_difference(a: object, b: object, path: str = "") -> str | None:
    """Where two JSON values first differ (a dotted path), or None."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in a:
            found = first_difference(a[key], b.get(key), f"{path}.{key}" if path else key)
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            found = first_difference(x, y, f"{path}[{i}]")
            if found:
                return found
        return None
    return None if a == b else path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--json", type=Path, help="write the table here too")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="passed to dfwe demo")
    parser.add_argument("--reuse", action="store_true", help="compare the runs already in OUT, run only missing ones")
    args = parser.parse_args()
    extra = [item for pair in args.set for item in ("--set", pair)]
    rows, reference = [], None
    for index, (name, (env, overrides)) in enumerate(SETTINGS.items()):
        results, seconds = demo(args.out / f"run{index}", env, extra + [f"--set={o}" for o in overrides], args.reuse)
        reference = reference or results
        dfwe_test = results["methods"]["dfwe"]["test"][results["task"]["metric"]]
        rows.append({"setting": name, "env": env, "overrides": overrides, "seconds": seconds and round(seconds, 1),
                     "identical_to_reference": json.dumps(results, sort_keys=True) == json.dumps(reference, sort_keys=True),
                     "first_difference": first_difference(reference, results), "dfwe_test": dfwe_test,
                     # content keys of the experts: they hash the base's weights, pretrained in the run
                     "experts_keys": results["cache_keys"]["experts"]})
        print(f"{name:48s} identical={rows[-1]['identical_to_reference']!s:5s} dfwe test {dfwe_test:.4f} "
              f"({seconds or 0:.0f}s) first difference: {rows[-1]['first_difference']}", flush=True)
    lines = ["| setting | results.json identical to the reference | first difference | dfwe test | seconds |",
             "| --- | --- | --- | ---: | ---: |"]
    lines += [f"| {r['setting']} | {'yes' if r['identical_to_reference'] else 'no'} | {r['first_difference'] or '-'} | "
              f"{r['dfwe_test']:.4f} | {r['seconds'] or '-'} |" for r in rows]
    print("\n".join(lines))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"command": " ".join(sys.argv), "machine": machine(), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
