#!/usr/bin/env bash
# The learning-rule identification demonstration of README ("Identifying the rule"):
#   1. the sweep configs/sweeps/demo.toml (5 rules × 2 optimisers × 3 architectures × 2 data sets
#      × 2 batch sizes × 2 seeds = 240 runs, each recording its observables), 2 workers;
#   2. `plastic identify` on it: every classifier and feature set, the rule as the class;
#   3. the same on the runs that learned their task (test accuracy ≥ $MIN_ACCURACY, default
#      0.3: chance is 0.1 on digits, 0.125 on the bars), in $DIR/learned: a run that never left
#      chance gives its rule away by that alone;
#   4. the ConvRNN held out (trained on the two CNNs, tested on the ConvRNN), runs that learned;
#   5. the realism curves: accuracy per unit fraction and noise level (the sweep records
#      several views; see the sweep file), runs that learned;
#   6. scikit-learn on the same splits (needs numpy and scikit-learn in $PYTHON).
# The sweep takes about 70 minutes on a 2-core CPU; each full identify of its 1040 samples
# (forest and SVM grids, 10 splits, 21 points) several minutes per classifier and feature set.
# Rerunning continues a cut-off sweep (--resume) and redoes the analyses.
#
#   scripts/identify_demo.sh                       # all of it
#   OUT=/tmp/sweeps PYTHON=.venv/bin/python scripts/identify_demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PLASTIC="${PLASTIC:-${CARGO_TARGET_DIR:-target}/release/plastic}"
PYTHON="${PYTHON:-python3}"
OUT="${OUT:-sweeps}"
WORKERS="${WORKERS:-2}"
MIN_ACCURACY="${MIN_ACCURACY:-0.3}"
DIR="$OUT/demo"

resume=()
[ -d "$DIR" ] && resume=(--resume)
time "$PLASTIC" sweep --config configs/sweeps/demo.toml --workers "$WORKERS" --out "$OUT" "${resume[@]}"
"$PLASTIC" identify --dataset "$DIR"
"$PLASTIC" identify --dataset "$DIR" --min-test-accuracy "$MIN_ACCURACY" --out "$DIR/learned"
"$PLASTIC" identify --dataset "$DIR" --min-test-accuracy "$MIN_ACCURACY" --hold-out arch=convrnn --classifiers forest,svm --out "$DIR/held-out-convrnn"
"$PLASTIC" identify --dataset "$DIR" --min-test-accuracy "$MIN_ACCURACY" --classifiers forest --sweep-noise --out "$DIR/realism"
if "$PYTHON" -c "import numpy, sklearn" 2>/dev/null; then
    "$PYTHON" scripts/identify_sklearn.py "$DIR"
    "$PYTHON" scripts/identify_sklearn.py "$DIR" --results "$DIR/learned"
else
    echo "identify_demo: $PYTHON has no numpy / scikit-learn; skipped the scikit-learn comparison" >&2
fi
