#!/usr/bin/env bash
# What recording the observables costs: whole-run wall time of the quickstart CNN and of the
# ConvRNN quickstart with recording on (the default: 21 points) and off, in interleaved
# process pairs (on, off, on, off, …), reporting the median of each side and their ratio, and
# the same for the CPU time the processes used (user + system, steadier on a shared machine),
# and, from the runs with recording on, the recorder's own share of the run (summary.json's
# observe_seconds over wall_seconds, timed inside one process, so a virtual machine's stolen
# time, which moves whole runs by more than 3 %, hits both alike). observe_seconds is the time
# the training loop waits for the recorder: the statistics of each point run on a thread beside
# training, so what they cost shows in the wall and CPU ratios only. The target is a ratio ≤ 1.03.
#
#   scripts/observe_cost.sh                 # both configs, 5 pairs each
#   PAIRS=3 CONFIGS=configs/quickstart.toml scripts/observe_cost.sh
#
# Uses the release binary at $PLASTIC (default: $CARGO_TARGET_DIR/release/plastic, with
# CARGO_TARGET_DIR defaulting to ~/.cache/plastic-target as in .ci/run). Runs write to a temporary directory.
set -euo pipefail
cd "$(dirname "$0")/.."
PLASTIC="${PLASTIC:-${CARGO_TARGET_DIR:-$HOME/.cache/plastic-target}/release/plastic}"
PAIRS="${PAIRS:-5}"
CONFIGS="${CONFIGS:-configs/quickstart.toml configs/convrnn_quickstart.toml}"
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT

# "wall cpu share" of one whole training process: seconds (bash's own `time`) and the
# recorder's share of the run's wall time by its summary.json (0 with recording off).
run() {
    local config="$1" enabled="$2" TIMEFORMAT='%R %U %S' times
    times=$({ time "$PLASTIC" train --config "$config" --set observe.enabled="$enabled" --set name=cost --out "$OUT" --force >/dev/null 2>&1; } 2>&1 | awk '{ print $1, $2 + $3 }')
    echo "$times" "$(awk -F'[:,]' '/"wall_seconds"/ { wall = $2 } /"observe_seconds"/ { obs = $2 } END { printf "%.5f", (obs == "" || obs ~ /null/) ? 0 : obs / wall }' "$OUT/cost/summary.json")"
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
    share=$(printf '%s\n' "${on[@]}" | cut -d' ' -f3 | median)
    printf '%-34s wall: on %7.2f s  off %7.2f s  ratio %s   cpu: on %7.2f s  off %7.2f s  ratio %s   recorder: %.1f %% of the run   (%s pairs)\n' \
        "$config" "$wall_on" "$wall_off" "$(ratio "$wall_on" "$wall_off")" "$cpu_on" "$cpu_off" "$(ratio "$cpu_on" "$cpu_off")" "$(awk -v s="$share" 'BEGIN { print 100 * s }')" "$PAIRS"
done
