#!/usr/bin/env bash
# `plastic neural-fit` checked against scikit-learn end to end: trains the quickstart CNN on a
# reduced budget, shows it 150 digits given as an NPZ of images, makes synthetic responses from
# one of its layers (a random linear map plus repetition noise), fits them with ridge and with
# PLS (PCA to 50 components per training fold, so the reduction is exercised on the wider
# layers), and scripts/neural_sklearn.py refits scikit-learn's PCA, RidgeCV and PLSRegression on
# the same features and folds (an exact PCA on both sides). Fails when a raw score differs by
# more than 0.002.
#
#   PYTHON=.venv/bin/python scripts/neural_check.sh
#
# Needs numpy and scikit-learn in $PYTHON (default python3); installs nothing. Uses $PLASTIC
# (default: the release binary).
set -euo pipefail
cd "$(dirname "$0")/.."
PLASTIC="${PLASTIC:-${CARGO_TARGET_DIR:-target}/release/plastic}"
PYTHON="${PYTHON:-python3}"
OUT="${OUT:-$(mktemp -d)}"

"$PYTHON" -c "import numpy, sklearn" || { echo "neural_check: $PYTHON cannot import numpy and scikit-learn" >&2; exit 2; }
"$PLASTIC" train --config configs/quickstart.toml --set train.steps=150 --set name=neural-check --out "$OUT" >/dev/null 2>&1
"$PYTHON" scripts/neural_sklearn.py stimuli "$OUT"
"$PLASTIC" features --run "$OUT/neural-check" --stimuli "$OUT/stimuli.npz" --out "$OUT/features.npz"
"$PYTHON" scripts/neural_sklearn.py responses "$OUT" conv2.t00
for method in ridge pls; do
    "$PLASTIC" neural-fit --run "$OUT/neural-check" --stimuli "$OUT/stimuli.npz" --responses "$OUT/responses.npz" \
        --method "$method" --folds 5 --pca 50 --out "$OUT/fit-$method" >/dev/null
    "$PYTHON" scripts/neural_sklearn.py compare "$OUT" "$OUT/fit-$method" "$method" --tolerance 0.002
done
