#!/usr/bin/env bash
# README's "Comparing with neural data" example end to end: the ConvRNN quickstart (trained
# if runs/convrnn-quickstart has no checkpoint), 500 digits as stimuli, synthetic recordings
# of two "regions" — V4 driven by conv2 at step 3, IT by conv3 at step 6, each a random linear
# map of the layer plus repetition noise — then `plastic features`, `plastic neural-fit` (ridge
# and PLS) and `plastic ost`. neural-fit should commit V4 to conv2 and IT to conv3.
#
#   PYTHON=.venv/bin/python scripts/neural_demo.sh       # writes neural-demo/
#
# Needs numpy and scikit-learn in $PYTHON (for the stimuli and the synthetic recordings), and
# torch for the last step: the run exported for PyTorch, shown the same stimuli in PyTorch, must
# agree with `plastic ost` (scripts/torch_bridge_demo.py).
set -euo pipefail
cd "$(dirname "$0")/.."
PLASTIC="${PLASTIC:-${CARGO_TARGET_DIR:-target}/release/plastic}"
PYTHON="${PYTHON:-python3}"
OUT="${OUT:-neural-demo}"
RUN="${RUN:-runs/convrnn-quickstart}"
mkdir -p "$OUT"

ls "$RUN"/checkpoints/step-*.safetensors >/dev/null 2>&1 || "$PLASTIC" train --config configs/convrnn_quickstart.toml
"$PYTHON" scripts/neural_sklearn.py stimuli "$OUT" 500
"$PLASTIC" features --run "$RUN" --stimuli "$OUT/stimuli.npz" --out "$OUT/features.npz"
"$PYTHON" scripts/neural_sklearn.py responses "$OUT" V4=conv2.t03,IT=conv3.t06
for method in ridge pls; do
    "$PLASTIC" neural-fit --run "$RUN" --stimuli "$OUT/stimuli.npz" --responses "$OUT/responses.npz" --method "$method" --out "$OUT/fit-$method"
done
# Solution times need labels: the stimuli NPZ carries none, so give them as a CSV.
"$PYTHON" - "$OUT" <<'PY'
import sys
import numpy as np
from sklearn.datasets import load_digits
out = sys.argv[1]
ids = np.load(f"{out}/stimuli.npz")["stimulus_id"]
labels = load_digits().target[: len(ids)]
with open(f"{out}/labels.csv", "w") as f:
    f.write("stimulus_id,label\n")
    f.writelines(f"{i},{l}\n" for i, l in zip(ids, labels))
PY
"$PLASTIC" ost --run "$RUN" --stimuli "$OUT/stimuli.npz" --labels "$OUT/labels.csv" --out "$OUT/ost"
"$PLASTIC" export --run "$RUN" --format pytorch
"$PYTHON" scripts/torch_bridge_demo.py "$RUN/pytorch" "$OUT/stimuli.npz" "$OUT/ost"
