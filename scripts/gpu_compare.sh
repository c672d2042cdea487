#!/usr/bin/env bash
# The GPU half of the PyTorch comparison in one prepared run, for a machine with an NVIDIA GPU,
# its Vulkan driver and PyTorch with CUDA, but no Rust toolchain: plastic's binaries come built.
#
#   SPIRV=/tmp/plastic-vulkan WGSL=/tmp/plastic OUT_DIR=/tmp/out BUDGET=480 scripts/gpu_compare.sh
#
# SPIRV is plastic built with `--features vulkan` (kernels compiled to SPIR-V: bf16, cooperative
# matrices), WGSL the default build (kernels compiled to WGSL: f32 and f16 only). Stages run in
# order of importance and each only while BUDGET seconds are not spent, so a short lease still
# returns the first ones; every stage appends to OUT_DIR as it goes:
#   compare.jsonl        scripts/compare.sh's lines (medians and ratios), per case and precision
#   raw.jsonl            every process's own line (plastic bench / bench_pytorch.py)
#   runs.jsonl           summary.json of the mixed-precision training runs
#   log.txt              everything printed
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${OUT_DIR:-bench/results/gpu-run}"
BUDGET="${BUDGET:-480}"
mkdir -p "$OUT_DIR"
exec > >(tee -a "$OUT_DIR/log.txt") 2>&1
export RAW="$OUT_DIR/raw.jsonl" RESULTS="$OUT_DIR/compare.jsonl" DEVICE="${DEVICE:-cuda}" PLASTIC_DEVICE=wgpu THREADS="${THREADS:-8}"
start=$SECONDS
left() { echo $((BUDGET - (SECONDS - start))); }
stage() { # stage NEED_SECONDS LABEL COMMAND…: runs COMMAND if NEED seconds are left, killed when the budget ends
    local need=$1 label=$2; shift 2
    local l; l=$(left)
    if [ "$l" -lt "$need" ]; then echo "== skip $label ($l s left, needs ~$need)"; return; fi
    echo "== $(date +%T) $label (budget left $l s)"
    timeout "$l" "$@" || echo "== $label: exit $?"
}

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"

# Which build to compare: SPIR-V if it runs at all here, else WGSL.
PLASTIC="$WGSL"
if [ -n "${SPIRV:-}" ] && timeout 120 "$SPIRV" bench --device wgpu --model convnet --batch 64 --resolution 32 --channels 3 --classes 10 --steps 5 --rounds 3 | tee -a "$RAW"; then
    PLASTIC="$SPIRV"
else
    echo "== the SPIR-V build failed here; comparing the WGSL build"
fi
"$WGSL" bench --device wgpu --model convnet --batch 64 --resolution 32 --channels 3 --classes 10 --steps 5 --rounds 3 | tee -a "$RAW" \
    || { [ "$PLASTIC" = "$WGSL" ] && { echo "== no build runs on this GPU"; exit 1; }; }
export PLASTIC
note="plastic $([ "$PLASTIC" = "$WGSL" ] && echo WGSL || echo 'SPIR-V (--features vulkan)') on wgpu/Vulkan"

NOTE="$note" PAIRS=3 stage 60 "convnet f32" scripts/compare.sh convnet
NOTE="$note" PAIRS=2 stage 90 "resnet18_224 f32" scripts/compare.sh resnet18_224
NOTE="$note" PAIRS=1 STEPS=2 ROUNDS=2 stage 100 "rgc_shallow_224 f32" scripts/compare.sh rgc_shallow_224
# Mixed precision: bf16 where the build and driver have it (SPIR-V; WGSL has none), else f16.
half=f16
[ "$(left)" -gt 30 ] && timeout 60 "$PLASTIC" bench --device wgpu --model convnet --batch 64 --resolution 32 --channels 3 --classes 10 --steps 2 --rounds 1 --set train.precision=bf16 | tee -a "$RAW" && half=bf16
NOTE="$note" PAIRS=2 PRECISION=$half stage 90 "resnet18_224 $half" scripts/compare.sh resnet18_224
NOTE="$note" PAIRS=3 PRECISION=$half stage 50 "convnet $half" scripts/compare.sh convnet
# Mixed precision trains as well as f32 on this GPU too (the quickstart's f32 figure is 98.89 %).
stage 60 "quickstart $half" sh -c "\"$PLASTIC\" train --device wgpu --config configs/quickstart.toml --set train.precision=$half --set name=quickstart-$half --out /tmp/gpu-runs > /dev/null && cat /tmp/gpu-runs/quickstart-$half/summary.json >> \"$OUT_DIR/runs.jsonl\" && echo >> \"$OUT_DIR/runs.jsonl\""
NOTE="$note" PAIRS=1 STEPS=2 ROUNDS=2 PRECISION=$half stage 100 "rgc_shallow_224 $half" scripts/compare.sh rgc_shallow_224
echo "== done in $((SECONDS - start)) s"
cat "$OUT_DIR/compare.jsonl" 2>/dev/null
