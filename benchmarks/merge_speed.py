"""How fast is one merge? dfwe's in-place merge against the machine's copy bandwidth, a naive per-tensor
loop over in-memory state dicts (the LoraHub pattern) and an on-disk round trip per candidate (the
mergekit-evolve pattern: read the N checkpoints, merge, write a model folder, build the model from it, once
by hand at its best case and once with mergekit's own ``run_merge``).
Prints a table and writes JSON; asserts nothing.

    python benchmarks/merge_speed.py --out benchmarks/results/merge_speed_cpu.json
    python benchmarks/merge_speed.py --device cuda --out benchmarks/results/merge_speed_cuda.json

Each (model, N) case runs in a fresh subprocess so its peak memory is its own. Peak memory is the rise of
the process's peak resident set (VmHWM, reset first; CPU) or of torch's peak allocation (CUDA) above what
the process held before the live model was built and the checkpoints read; the floor is (N + 1) x model bytes (stacked ingredients + live model).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from transformers import BertConfig, BertForSequenceClassification

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from dfwe.merge.space import WeightSpace  # noqa: E402

MODELS = {
    # all-MiniLM-L6-v2's shape (22.7M parameters) and BERT-base's (110M); random weights
    "minilm": dict(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                   intermediate_size=1536),
    "bert-base": dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                      intermediate_size=3072),
}


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as handle:
        line = next(line for line in handle if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024  # kB


def reset_peak_rss() -> None:
    """Restart the peak-RSS count (VmHWM). getrusage's ru_maxrss would not do: Linux carries it across
    fork and exec, so a child would report its parent's peak."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def peak_rss_mib() -> float:
    return _status_mib("VmHWM")


def current_rss_mib() -> float:
    return _status_mib("VmRSS")


def timeit(fn, device: torch.device, repeats: int) -> float:
    """Median seconds of ``fn`` over ``repeats`` runs after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def copy_bandwidth(device: torch.device, megabytes: int = 1024) -> float:
    """Bytes per second of a large tensor copy, counting bytes read plus bytes written."""
    src = torch.randn(megabytes * 2**20 // 4, device=device)
    dst = torch.empty_like(src)
    seconds = timeit(lambda: dst.copy_(src), device, 5)
    return 2 * src.numel() * 4 / seconds


def make_checkpoints(model: str, count: int, folder: Path) -> list[Path]:
    """``count`` random checkpoints of one architecture (seeded), written as safetensors files."""
    torch.manual_seed(0)
    config = BertConfig(**MODELS[model], num_labels=7)
    state = {k: v.contiguous() for k, v in BertForSequenceClassification(config).state_dict().items()
             if v.is_floating_point()}
    paths = []
    for i in range(count):
        path = folder / f"{model}-{i}.safetensors"
        if not path.exists():
            save_file({k: v + 0.01 * torch.randn_like(v) for k, v in state.items()}, str(path))
        paths.append(path)
    (folder / f"{model}.json").write_text(json.dumps(config.to_dict()))
    return paths


def mergekit_round_trip(space: WeightSpace, weights: np.ndarray, paths: list[Path], config: BertConfig,
                        tmp: Path, device: torch.device):
    """One candidate the way mergekit-evolve scores it: mergekit's own ``run_merge`` (in process, so no
    interpreter start-up is counted) writes the merged folder, and the model is built from it."""
    from mergekit.config import MergeConfiguration
    from mergekit.merge import MergeOptions, run_merge

    from dfwe.merge.export import mergekit_config

    folders = []
    for path in paths:  # mergekit reads model folders
        folder = tmp / "inputs" / path.stem
        folder.mkdir(parents=True, exist_ok=True)
        config.save_pretrained(folder)
        if not (folder / "model.safetensors").exists():
            (folder / "model.safetensors").symlink_to(path.resolve())
        folders.append(folder)
    recipe = MergeConfiguration.model_validate(mergekit_config(space, weights[None, :], folders, "linear"))
    options = MergeOptions(copy_tokenizer=False, write_model_card=False, quiet=True, lazy_unpickle=True,
                           device=str(device))

    def round_trip() -> None:
        run_merge(recipe, str(tmp / "mergekit-out"), options=options)
        BertForSequenceClassification.from_pretrained(tmp / "mergekit-out").to(device)

    return round_trip


def run_case(model: str, count: int, folder: Path, device: torch.device, repeats: int) -> dict:
    """One (model, N) case, measured in this process."""
    paths = make_checkpoints(model, count, folder)[:count]
    config = BertConfig(**MODELS[model], num_labels=7, architectures=["BertForSequenceClassification"])
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.max_memory_allocated()
    reset_peak_rss()
    rss_before = current_rss_mib()
    live_model = BertForSequenceClassification(config).to(device)
    space = WeightSpace.from_checkpoints(paths, device=device)
    space.bind(live_model)
    parameters = space.stacked.shape[1]
    model_bytes = parameters * 4
    weights = np.random.default_rng(0).dirichlet(np.ones(count))

    merge_s = timeit(lambda: space.apply("linear", weights), device, repeats)
    if device.type == "cuda":
        peak = (torch.cuda.max_memory_allocated() - before) / 2**20
    else:
        peak = peak_rss_mib() - rss_before

    # the LoraHub pattern: a Python loop over state dicts, one weighted sum per tensor
    states = [space.row_state(r) for r in range(count)]
    names = list(states[0])

    def naive() -> dict:
        return {n: sum(float(w) * s[n] for w, s in zip(weights, states)) for n in names}

    naive_s = timeit(naive, device, max(2, repeats // 3))

    # the mergekit-evolve pattern, per candidate: read the N checkpoints, merge tensor by tensor, write the
    # candidate as a model folder, build the evaluation model from that folder
    with tempfile.TemporaryDirectory() as tmp:
        candidate = Path(tmp) / "candidate"

        def disk_round_trip() -> None:
            inputs = [load_file(str(path)) for path in paths]
            merged = {n: sum(float(w) * s[n] for w, s in zip(weights, inputs)) for n in inputs[0]}
            candidate.mkdir(exist_ok=True)
            save_file({n: t.contiguous() for n, t in merged.items()}, str(candidate / "model.safetensors"))
            config.save_pretrained(candidate)
            BertForSequenceClassification.from_pretrained(candidate).to(device)

        disk_s = timeit(disk_round_trip, device, 2)
        mergekit_s = timeit(mergekit_round_trip(space, weights, paths, config, Path(tmp), device), device, 2)
    floor_bytes = (count + 1) * model_bytes
    return {"model": model, "n": count, "parameters": parameters, "device": str(device),
            "merge_ms": merge_s * 1e3, "effective_GBps": floor_bytes / merge_s / 1e9,
            "naive_ms": naive_s * 1e3, "disk_round_trip_ms": disk_s * 1e3,
            "mergekit_ms": mergekit_s * 1e3,
            "peak_MiB": peak, "floor_MiB": floor_bytes / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--n", type=int, nargs="+", default=[2, 4, 8, 16])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own)")
    parser.add_argument("--folder", type=Path, default=Path(tempfile.gettempdir()) / "dfwe-merge-bench")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/merge_speed.json"))
    parser.add_argument("--case", nargs=2, metavar=("MODEL", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.folder.mkdir(parents=True, exist_ok=True)
    if args.case:  # child process: one case, JSON on stdout
        print(json.dumps(run_case(args.case[0], int(args.case[1]), args.folder, device, args.repeats)))
        return

    bandwidth = copy_bandwidth(device)
    rows = []
    for model in args.models:
        make_checkpoints(model, max(args.n), args.folder)
        for count in args.n:
            command = [sys.executable, __file__, "--case", model, str(count), "--device", args.device,
                       "--repeats", str(args.repeats), "--folder", str(args.folder)]
            if args.threads:
                command += ["--threads", str(args.threads)]
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            row = json.loads(done.stdout.strip().splitlines()[-1])
            row["of_copy_bandwidth"] = row["effective_GBps"] * 1e9 / bandwidth
            row["vs_naive"] = row["naive_ms"] / row["merge_ms"]
            row["vs_disk"] = row["disk_round_trip_ms"] / row["merge_ms"]
            row["vs_mergekit"] = row["mergekit_ms"] / row["merge_ms"]
            row["peak_over_floor"] = row["peak_MiB"] / row["floor_MiB"]
            rows.append(row)
            print(f"{model:9s} N={count:2d}  merge {row['merge_ms']:8.2f} ms  {row['effective_GBps']:6.1f} GB/s "
                  f"({row['of_copy_bandwidth']:.0%} of copy)  naive x{row['vs_naive']:.1f}  "
                  f"disk x{row['vs_disk']:.0f}  mergekit x{row['vs_mergekit']:.0f}  peak {row['peak_MiB']:.0f} MiB ({row['peak_over_floor']:.2f} x floor)",
                  flush=True)

    header = ("| model | N | merge (ms) | effective GB/s | % of copy bandwidth | naive loop (ms) | speed-up vs naive "
              "| disk round trip (ms) | speed-up vs disk | mergekit round trip (ms) | speed-up vs mergekit "
              "| peak MiB | peak / floor |")
    lines = [f"copy bandwidth on {device}: {bandwidth / 1e9:.1f} GB/s (read + write)", "", header,
             "| --- " * 13 + "|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['n']} | {r['merge_ms']:.2f} | {r['effective_GBps']:.1f} | "
                     f"{r['of_copy_bandwidth']:.0%} | {r['naive_ms']:.1f} | {r['vs_naive']:.1f}x | "
                     f"{r['disk_round_trip_ms']:.0f} | {r['vs_disk']:.0f}x | {r['mergekit_ms']:.0f} | "
                     f"{r['vs_mergekit']:.0f}x | {r['peak_MiB']:.0f} | "
                     f"{r['peak_over_floor']:.2f} |")
    print("\n" + "\n".join(lines))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"device": str(device), "copy_bandwidth_GBps": bandwidth / 1e9,
                                    "threads": torch.get_num_threads(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
