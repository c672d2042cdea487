#!/usr/bin/env bash
# Trains configs/convrnn_quickstart.toml (a small RGC ConvRNN with one feedback edge) on digits
# with backprop and with feedback alignment, and checks ≥ 90 % and ≥ 50 % test accuracy.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/plastic-target}"
cargo build --release --quiet
OUT="${OUT:-runs}"
for rule in backprop feedback_alignment; do
    "$CARGO_TARGET_DIR/release/plastic" train --config configs/convrnn_quickstart.toml --device cpu --out "$OUT" --force \
        --set "name=convrnn-quickstart-$rule" --set "rule.kind=$rule" "$@"
done
python3 - "$OUT" <<'PY'
import json, sys
ok = True
for rule, floor in (("backprop", 0.90), ("feedback_alignment", 0.50)):
    s = json.load(open(f"{sys.argv[1]}/convrnn-quickstart-{rule}/summary.json"))
    print(f"convrnn_quickstart {rule}: test accuracy {100 * s['test_accuracy']:.2f} % ({s['wall_seconds']:.0f} s)")
    ok &= s["test_accuracy"] >= floor
sys.exit(0 if ok else 1)
PY
