#!/usr/bin/env bash
# The full Friends protocol on one GPU, in one call of the device tool (experts trained per seed, k = 8 and
# 32, seeds 0-2, default and ablation variants), results written under $OUT.
#
# Prepare the carry on the CPU machine first (git-excluded; at most 64 MiB travels):
#   .device-carry/minilm/          all-MiniLM-L6-v2 as float16 safetensors + config + tokenizer (45 MB)
#   .device-carry/friends.tar.gz   tar -C ../shared/data -czf .device-carry/friends.tar.gz friends
#   .device-carry/whl/             pip download --only-binary=:all: --python-version 3.12 --no-deps \
#                                  pydantic pydantic_core annotated_types typing_inspection typing_extensions cma
# then: run(command="bash benchmarks/friends_gpu.sh", carry=[".device-carry"], timeout_s=600)
set -euo pipefail
OUT=${OUT:-runs/friends-gpu}
mkdir -p "$OUT"
work=$(mktemp -d)
pip install --quiet --no-index --no-deps --target "$work/site" .device-carry/whl/*.whl
export PYTHONPATH="$work/site:$PWD/src"
tar -C "$work" -xzf .device-carry/friends.tar.gz
python3 - "$work/minilm" <<'PY'
import shutil, sys
from pathlib import Path
from safetensors.torch import load_file, save_file
src, dst = Path(".device-carry/minilm"), Path(sys.argv[1])
shutil.copytree(src, dst)
save_file({k: v.float() for k, v in load_file(str(src / "model.safetensors")).items()}, str(dst / "model.safetensors"))
PY
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
python3 benchmarks/merge_speed.py --device cuda --n 2 4 8 16 --out "$OUT/merge_speed_cuda.json" | tee "$OUT/merge_speed_cuda.txt"
python3 benchmarks/friends_protocol.py --data-dir "$work/friends" --out "$work/protocol" \
    --set model.base="$work/minilm" --set device=cuda --deadline 420 | tee "$OUT/protocol.txt"
cp "$work/protocol/protocol.json" "$work/protocol/protocol.md" "$OUT/"
for k in 8 32; do
    [ -f "$work/protocol/k$k/default/results.json" ] && cp "$work/protocol/k$k/default/results.json" "$OUT/friends_k$k.json"
done
