#!/usr/bin/env bash
# The full quick start: trains configs/quickstart.toml on the embedded digits set and checks
# that the test accuracy reaches 95 %. Extra arguments go to `plastic train`.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/plastic-target}"
cargo build --release --quiet
OUT="${OUT:-runs}"
"$CARGO_TARGET_DIR/release/plastic" train --config configs/quickstart.toml --device cpu --out "$OUT" --force "$@"
python3 - "$OUT/quickstart/summary.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
print(f"quickstart: test accuracy {100 * s['test_accuracy']:.2f} % after {s['steps']} steps in {s['wall_seconds']:.1f} s on {s['device']}")
sys.exit(0 if s["test_accuracy"] >= 0.95 else 1)
PY
