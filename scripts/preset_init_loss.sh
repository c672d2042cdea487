#!/usr/bin/env bash
# The released-model presets' test loss at initialisation (lr 1e-12, one step), under He init
# and under the presets' own TF1 variance_scaling init, on 4 classes of synthetic 64-px images at
# width 0.25 (chance: ln 4 = 1.39). README's ConvRNNs section quotes rgc_shallow and
# rgc_intermediate from this.
#
#   scripts/preset_init_loss.sh [configs/rgc_shallow.toml …]     # default: every preset
set -euo pipefail
cd "$(dirname "$0")/.."
PLASTIC="${PLASTIC:-${CARGO_TARGET_DIR:-target}/release/plastic}"
CONFIGS=("$@")
[ "${#CONFIGS[@]}" -gt 0 ] || CONFIGS=(configs/*_shallow.toml configs/*_intermediate.toml)
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
for c in "${CONFIGS[@]}"; do
    n=$(basename "$c" .toml)
    for init in kaiming_uniform "$(grep -oE '^init = \{[^}]*\}' "$c" | sed 's/^init = //')"; do
        rm -rf "$OUT/run"
        loss=$("$PLASTIC" train --device cpu --config "$c" --set data.kind=synthetic --set data.classes=4 \
            --set data.resolution=64 --set data.synthetic.size=64 --set data.synthetic.channels=3 \
            --set data.synthetic.samples=40 --set data.synthetic.classes=4 --set model.convrnn.width=0.25 \
            --set "model.convrnn.init=$init" --set train.steps=1 --set train.lr=1e-12 --set train.batch_size=4 \
            --set train.eval_batch_size=8 --set train.warmup_steps=0 --out "$OUT/run" 2>&1 | tail -n 1 | sed 's/.*test loss //')
        echo "$n $init $loss"
    done
done
