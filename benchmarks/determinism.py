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

# Each setting is the environment of one run; the first is the reference.
SETTINGS: dict[str, dict[str, str]] = {
    "reference (2 threads, AVX-512 kernels)": {"OMP_NUM_THREADS": "2"},
    "same again": {"OMP_NUM_THREADS": "2"},
    "1 thread": {"OMP_NUM_THREADS": "1"},
    "AVX2 kernels (ATEN_CPU_CAPABILITY=avx2)": {"OMP_NUM_THREADS": "2", "ATEN_CPU_CAPABILITY": "avx2"},
    "MKL_CBWR=COMPATIBLE": {"OMP_NUM_THREADS": "2", "MKL_CBWR": "COMPATIBLE"},
    "AVX2 kernels + MKL_CBWR=COMPATIBLE": {"OMP_NUM_THREADS": "2", "ATEN_CPU_CAPABILITY": "avx2",
                                          "MKL_CBWR": "COMPATIBLE"},
    "1 thread, AVX2 kernels + MKL_CBWR=COMPATIBLE": {"OMP_NUM_THREADS": "1", "ATEN_CPU_CAPABILITY": "avx2",
                                                    "MKL_CBWR": "COMPATIBLE"},
}
PINNED = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "ATEN_CPU_CAPABILITY", "MKL_CBWR")


def demo(out: Path, env: dict[str, str], extra: list[str]) -> tuple[dict, float]:
    clean = {k: v for k, v in os.environ.items() if k not in PINNED}
    began = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "dfwe.cli", "demo", "--out", str(out), "--overwrite", *extra],
                          capture_output=True, text=True, env={**clean, "DFWE_PROGRESS": "0", **env})
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    results = json.loads((out / "results.json").read_text())
    results.pop("timing_seconds")
    return results, time.perf_counter() - began


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
    args = parser.parse_args()
    extra = [item for pair in args.set for item in ("--set", pair)]
    rows, reference = [], None
    for index, (name, env) in enumerate(SETTINGS.items()):
        results, seconds = demo(args.out / f"run{index}", env, extra)
        reference = reference or results
        dfwe_test = results["methods"]["dfwe"]["test"][results["task"]["metric"]]
        rows.append({"setting": name, "env": env, "seconds": round(seconds, 1),
                     "identical_to_reference": json.dumps(results, sort_keys=True) == json.dumps(reference, sort_keys=True),
                     "first_difference": first_difference(reference, results), "dfwe_test": dfwe_test})
        print(f"{name:48s} identical={rows[-1]['identical_to_reference']!s:5s} dfwe test {dfwe_test:.4f} "
              f"({seconds:.0f}s) first difference: {rows[-1]['first_difference']}", flush=True)
    lines = ["| setting | results.json identical to the reference | first difference | dfwe test | seconds |",
             "| --- | --- | --- | ---: | ---: |"]
    lines += [f"| {r['setting']} | {'yes' if r['identical_to_reference'] else 'no'} | {r['first_difference'] or '-'} | "
              f"{r['dfwe_test']:.4f} | {r['seconds']:.0f} |" for r in rows]
    print("\n".join(lines))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"command": " ".join(sys.argv), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
