#!/usr/bin/env bash
# What recording the observables costs: whole-run wall time of the quickstart CNN and of the
# ConvRNN quickstart with recording on (the default: 21 points) and off, in interleaved
# process pairs (on, off, on, off, …), reporting the median of each side and their ratio.
# The target is a ratio ≤ 1.03.
#
#   scripts/observe_cost.sh                 # both configs, 5 pairs each
#   PAIRS=3 CONFIGS=configs/quickstart.toml scripts/observe_cost.sh
#
# Uses the release binary at $PLASTIC (default: target/release/plastic, or
# $CARGO_TARGET_DIR/release/plastic). Runs write to a temporary directory.
set -euo pipefail
cd "$(dirname "$0")/.."
PLASTIC="${PLASTIC:-${CARGO_TARGET_DIR:-target}/release/plastic}"
PAIRS="${PAIRS:-5}"
CONFIGS="${CONFIGS:-configs/quickstart.toml configs/convrnn_quickstart.toml}"
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT

# Whole-process wall seconds of one training run.
run() {
    local config="$1" enabled="$2" start end
    start=$(date +%s.%N)
    "$PLASTIC" train --config "$config" --set observe.enabled="$enabled" --set name=cost --out "$OUT" --force >/dev/null 2>&1
    end=$(date +%s.%N)
    awk -v a="$start" -v b="$end" 'BEGIN { print b - a }'
}

median() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

for config in $CONFIGS; do
    on=(); off=()
    run "$config" true >/dev/null # warm-up (page cache, lazy initialisation)
    for _ in $(seq "$PAIRS"); do
        on+=("$(run "$config" true)")
        off+=("$(run "$config" false)")
    done
    m_on=$(printf '%s\n' "${on[@]}" | median)
    m_off=$(printf '%s\n' "${off[@]}" | median)
    printf '%-34s recording on %8.2f s   off %8.2f s   ratio %.3f   (%s pairs)\n' "$config" "$m_on" "$m_off" "$(awk -v a="$m_on" -v b="$m_off" 'BEGIN { print a / b }')" "$PAIRS"
done
