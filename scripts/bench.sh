#!/usr/bin/env bash
# Benchmarks: training-step throughput and peak memory of the zoo, each rule's step time as a
# ratio to backprop (measured in the same process), and the ConvRNN presets at several T.
# Writes one JSON line per case to bench/results/<device>-<date>.jsonl and prints them.
#   scripts/bench.sh [--device cpu|wgpu|cuda]
# PLASTIC=path/to/plastic uses a prebuilt binary instead of building one (e.g. on a GPU machine
# without a Rust toolchain). On a GPU, PyTorch's step time on the same models is measured too
# when python3 can import torch with CUDA (scripts/bench_pytorch.py), in the same run.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/plastic-target}"
DEVICE=cpu
[ "${1:-}" = "--device" ] && DEVICE="$2"
if [ -z "${PLASTIC:-}" ]; then
    FEATURES=()
    [ "$DEVICE" = cuda ] && FEATURES=(--features cuda)
    cargo build --release --quiet "${FEATURES[@]}"
    PLASTIC="$CARGO_TARGET_DIR/release/plastic"
fi
mkdir -p bench/results
OUT="bench/results/$DEVICE-$(date +%Y-%m-%d).jsonl"
: > "$OUT"
B() { "$PLASTIC" bench --device "$DEVICE" "$@" | tee -a "$OUT"; }
T() { python3 scripts/bench_pytorch.py --device cuda "$@" | tee -a "$OUT"; }

if [ "$DEVICE" = cpu ]; then
    # The zoo at CIFAR size (3×32×32), batch 32, backprop.
    B --model mlp,convnet,knet4,knet5,alexnet,resnet18,shallownet --batch 32 --resolution 32 --channels 3 --steps 3 --rounds 3
    # Rule ratios on two CNNs (interleaved rounds; medians).
    B --model convnet --rules all --batch 64 --resolution 32 --channels 3 --steps 5 --rounds 5
    B --model knet4 --rules all --batch 64 --resolution 32 --channels 3 --steps 5 --rounds 5
    # ConvRNNs: the quickstart and the intermediate RGC (quarter width, 64 px), peak memory per T.
    B --config configs/convrnn_quickstart.toml --rules backprop,feedback_alignment --batch 32 --steps 3 --rounds 3
    for T in 12 17 24; do
        B --config configs/rgc_intermediate.toml --set model.convrnn.width=0.25 --set "model.convrnn.times=$T" \
            --resolution 64 --channels 3 --batch 8 --steps 1 --rounds 2 --warmup 1
    done
    # Every ConvRNN preset at quarter width and 64 px, with its own T.
    for C in configs/*_shallow.toml configs/*_intermediate.toml; do
        B --config "$C" --set model.convrnn.width=0.25 --resolution 64 --channels 3 --batch 8 --steps 1 --rounds 2 --warmup 1
    done
    # FULL=1: the full-size intermediate RGC (224 px, T = 17, batch 8, 1000 classes): peak memory
    # of a realistic unroll (about 5 minutes per step pair on a 2-core CPU).
    if [ "${FULL:-0}" = 1 ]; then
        B --config configs/rgc_intermediate.toml --resolution 224 --channels 3 --classes 1000 --batch 8 --steps 1 --rounds 1 --warmup 1
    fi
else
    # GPU: ImageNet-size ResNet-18 and AlexNet, the same ResNet-18 and convnet in PyTorch (on
    # CUDA, whichever backend plastic uses; same batch and optimiser), the CIFAR-size zoo.
    B --model resnet18,alexnet --batch 64 --resolution 224 --channels 3 --classes 1000 --steps 5 --rounds 3 --warmup 3
    if python3 -c "import torch; assert torch.cuda.is_available()" 2>/dev/null; then
        T --model resnet18 --batch 64 --resolution 224 --classes 1000
        T --model convnet --batch 128 --resolution 32 --classes 10
    fi
    B --model mlp,convnet,knet4,knet5,shallownet --batch 128 --resolution 32 --channels 3 --steps 10 --rounds 3 --warmup 3
    # Rule ratios on a small CNN (interleaved rounds; medians).
    B --model knet4 --rules all --batch 128 --resolution 32 --channels 3 --steps 10 --rounds 5 --warmup 3
    # ConvRNNs: the quickstart, and the full intermediate RGC at 224 px, peak memory per T.
    B --config configs/convrnn_quickstart.toml --rules backprop,feedback_alignment --batch 128 --steps 10 --rounds 3 --warmup 3
    for T in 12 17 24; do
        B --config configs/rgc_intermediate.toml --set "model.convrnn.times=$T" \
            --resolution 224 --channels 3 --classes 1000 --batch 16 --steps 2 --rounds 2 --warmup 2
    done
    # Rule ratios on ResNet-18 at 224 px.
    B --model resnet18 --rules all --batch 64 --resolution 224 --channels 3 --classes 1000 --steps 3 --rounds 3 --warmup 2
fi
echo "wrote $OUT"
