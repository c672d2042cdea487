#!/usr/bin/env bash
# CPU benchmarks: training-step throughput and peak memory of the zoo, each rule's step time
# as a ratio to backprop (measured in the same process), and the ConvRNN presets at several T.
# Writes one JSON line per case to bench/results/<device>-<date>.jsonl and prints a summary.
#   scripts/bench.sh [--device cpu|wgpu|cuda]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/plastic-target}"
DEVICE=cpu
[ "${1:-}" = "--device" ] && DEVICE="$2"
cargo build --release --quiet
P="$CARGO_TARGET_DIR/release/plastic"
mkdir -p bench/results
OUT="bench/results/$DEVICE-$(date +%Y-%m-%d).jsonl"
: > "$OUT"
B() { "$P" bench --device "$DEVICE" "$@" | tee -a "$OUT"; }
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
echo "wrote $OUT"
