#!/usr/bin/env bash
# Mixed precision against f32 on full budgets: trains each config in every precision with the
# same seeds, appends one JSON line per run to bench/results/precision-$DEVICE-<date>.jsonl and
# prints each precision's mean test accuracy and its difference from f32's (the target: within
# 1 point).
#
#   scripts/precision_check.sh                                   # both quickstarts, seed 0, CPU
#   SEEDS="0 1 2 3 4 5" CONFIGS=configs/quickstart.toml scripts/precision_check.sh
#   DEVICE=wgpu PRECISIONS="f32 f16" scripts/precision_check.sh  # a GPU (bf16 needs an adapter with it)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/plastic-target}"
SEEDS="${SEEDS:-0}"
DEVICE="${DEVICE:-cpu}"
PRECISIONS="${PRECISIONS:-f32 bf16 f16}"
CONFIGS="${CONFIGS:-configs/quickstart.toml configs/convrnn_quickstart.toml}"
PYTHON="${PYTHON:-python3}"
if [ -z "${PLASTIC:-}" ]; then
    cargo build --release --quiet
    PLASTIC="$CARGO_TARGET_DIR/release/plastic"
fi
mkdir -p bench/results
OUT="bench/results/precision-$DEVICE-$(date +%Y-%m-%d).jsonl"
runs="$(mktemp -d)"
lines="$runs/lines.jsonl"
for config in $CONFIGS; do
    for seed in $SEEDS; do
        for precision in $PRECISIONS; do
            name="$(basename "$config" .toml)-$precision-$seed"
            "$PLASTIC" train --config "$config" --device "$DEVICE" --set seed="$seed" --set train.precision="$precision" \
                --set name="$name" --out "$runs" > /dev/null 2>&1 || { echo "precision_check: $name failed" >&2; exit 1; }
            "$PYTHON" -c "import json,sys
s=json.load(open(sys.argv[1]))
print(json.dumps({'config': sys.argv[2], 'precision': sys.argv[3], 'seed': int(sys.argv[4]), 'device': s['device'],
  'test_accuracy': s['test_accuracy'], 'train_loss': s['train_loss'], 'steps': s['steps'], 'wall_seconds': s['wall_seconds'], 'date': sys.argv[5]}))" \
                "$runs/$name/summary.json" "$config" "$precision" "$seed" "$(date +%Y-%m-%d)" | tee -a "$OUT" >> "$lines"
        done
    done
done
"$PYTHON" - "$lines" <<'EOF'
import json, sys, collections
acc = collections.defaultdict(list)
for line in open(sys.argv[1]):
    r = json.loads(line)
    acc[(r["config"], r["precision"])].append(100 * r["test_accuracy"])
for (config, precision), v in acc.items():
    mean = sum(v) / len(v)
    ref = acc.get((config, "f32"))
    delta = f"{mean - sum(ref) / len(ref):+.2f} points vs f32" if ref and precision != "f32" else ""
    print(f"{config:40s} {precision:5s} {mean:6.2f} % over {len(v)} seed(s) {delta}")
EOF
rm -rf "$runs"
