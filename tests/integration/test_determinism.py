"""Same seed, same machine, same thread count: bit-identical results (timings aside), from scratch each time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REDUCED = ["--set", "data.synthetic.train_size=300", "--set", "data.synthetic.dev_size=40",
           "--set", "data.synthetic.test_size=60", "--set", "model.tiny.pretrain_steps=20",
           "--set", "experts.train.epochs=1", "--set", "target.train.epochs=2", "--set", "search.budget=5",
           "--set", "search.coarse_budget=2", "--set", "eval.bootstrap=30"]


def _demo(out: Path) -> dict:
    done = subprocess.run([sys.executable, "-m", "dfwe.cli", "demo", "--out", str(out), *REDUCED],
                          capture_output=True, text=True, env={**os.environ, "DFWE_PROGRESS": "0"})
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    results.pop("timing_seconds")
    return results


def test_two_runs_from_scratch_give_bit_identical_results(tmp_path):
    first, second = _demo(tmp_path / "a"), _demo(tmp_path / "b")  # separate work folders: nothing is shared
    assert json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)
    assert (tmp_path / "a" / "merged" / "model.safetensors").read_bytes() == \
        (tmp_path / "b" / "merged" / "model.safetensors").read_bytes()
