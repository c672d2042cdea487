#!/usr/bin/env bash
# The whole identification pipeline on the tiny sweep, checked against scikit-learn:
# `plastic sweep` trains configs/sweeps/tiny.toml (24 runs, about 20 s on 2 cores), `plastic
# identify` classifies the rule with the random forest and the linear SVM, and
# scripts/identify_sklearn.py refits scikit-learn's models on the same splits; it fails when a
# mean accuracy differs by more than 5 points, or when the classifiers are not well above chance.
#
#   PYTHON=.venv/bin/python scripts/identify_check.sh
#
# Needs numpy and scikit-learn in $PYTHON (default python3); it installs nothing (.ci/run makes
# a cached virtual environment). Uses $PLASTIC (default: the release binary).
set -euo pipefail
cd "$(dirname "$0")/.."
PLASTIC="${PLASTIC:-${CARGO_TARGET_DIR:-target}/release/plastic}"
PYTHON="${PYTHON:-python3}"
OUT="${OUT:-$(mktemp -d)}"

"$PYTHON" -c "import numpy, sklearn" || { echo "identify_check: $PYTHON cannot import numpy and scikit-learn" >&2; exit 2; }
"$PLASTIC" sweep --config configs/sweeps/tiny.toml --workers 2 --out "$OUT" >/dev/null
"$PLASTIC" identify --dataset "$OUT/tiny" --classifiers forest,svm --features all,weights,activations >/dev/null
"$PYTHON" scripts/identify_sklearn.py "$OUT/tiny" --tolerance 5
# Well above chance (1/3) on every feature set checked: the observables carry the rule.
"$PYTHON" - "$OUT/tiny/identify.json" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
chance = report["chance"]
for classifier, sets in report["classifiers"].items():
    for name, r in sets.items():
        acc, shuffled = r["test_accuracy_mean"], r["shuffled_accuracy_mean"]
        print(f"{classifier:7s} {name:12s} test {100 * acc:5.1f} %  shuffled {100 * shuffled:5.1f} %  chance {100 * chance:.1f} %")
        if acc < chance + 0.2:
            sys.exit(f"identify_check: {classifier} on {name} is {100 * acc:.1f} %, not well above chance ({100 * chance:.1f} %)")
        if abs(shuffled - chance) > 0.15:
            sys.exit(f"identify_check: {classifier} on {name} with shuffled labels is {100 * shuffled:.1f} %, far from chance")
PY
