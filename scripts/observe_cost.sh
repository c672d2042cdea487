#!/usr/bin/env bash
# What recording the observables costs: whole-run wall time of the quickstart CNN and of the
# ConvRNN quickstart with recording on (the default: 21 points) and off, in interleaved
# process pairs (on, off, on, off, …), reporting the median of each side and their ratio, and
# the same for the CPU time the processes used (user + system, steadier on a shared machine).
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

# "wall cpu" seconds of one whole training process (bash's own `time`).
run() {
    local config="$1" enabled="$2" TIMEFORMAT='%R %U %S'
    { time "$PLASTIC" train --config "$config" --set observe.enabled="$enabled" --set name=cost --out "$OUT" --force >/dev/null 2>&1; } 2>&1 | awk '{ print $1, $2 + $3 }'
}

median() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }

for config in $CONFIGS; do
    on=(); off=()
    run "$config" true >/dev/null # warm-up (page cache, lazy initialisation)
    for _ in $(seq "$PAIRS"); do
        on+=("$(run "$config" true)")
        off+=("$(run "$config" false)")
    done
    wall_on=$(printf '%s\n' "${on[@]}" | cut -d' ' -f1 | median)
    wall_off=$(printf '%s\n' "${off[@]}" | cut -d' ' -f1 | median)
    cpu_on=$(printf '%s\n' "${on[@]}" | cut -d' ' -f2 | median)
    cpu_off=$(printf '%s\n' "${off[@]}" | cut -d' ' -f2 | median)
    printf '%-34s wall: on %7.2f s  off %7.2f s  ratio %s   cpu: on %7.2f s  off %7.2f s  ratio %s   (%s pairs)\n' \
        "$config" "$wall_on" "$wall_off" "$(ratio "$wall_on" "$wall_off")" "$cpu_on" "$cpu_off" "$(ratio "$cpu_on" "$cpu_off")" "$PAIRS"
done
