#!/usr/bin/env bash
# Trains every learning rule on digits with the same budget (an MLP and a small CNN, configs
# rules_mlp.toml and rules_cnn.toml) and prints README's rules table: test accuracy and the
# final alignment angles, averaged over the layers whose B carries an error (all but the first).
#   scripts/rules_table.sh [extra plastic train arguments, e.g. --set seed=1]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/plastic-target}"
cargo build --release --quiet
PLASTIC="$CARGO_TARGET_DIR/release/plastic"
OUT="${OUT:-runs/rules-table}"
# Each entry is a rule, optionally with one more rule setting after a colon.
RULES="backprop feedback_alignment sign_symmetry kolen_pollack weight_mirror weight_mirror:source=noise information_alignment symmetric_alignment activation_alignment"
for model in mlp cnn; do
    for entry in $RULES; do
        rule="${entry%%:*}"
        extra=()
        [ "$entry" != "$rule" ] && extra=(--set "rule.${entry#*:}")
        "$PLASTIC" train --config "configs/rules_$model.toml" --device cpu --out "$OUT" --force \
            --set "name=$model-${entry//[:=]/-}" --set "rule.kind=$rule" "${extra[@]}" "$@" 2>/dev/null
    done
done
python3 - "$OUT" $RULES <<'PY'
import json, sys, statistics
out, rules = sys.argv[1], sys.argv[2:]
print("| rule | MLP test acc | MLP weight ∠ | MLP δx ∠ (true) | CNN test acc | CNN weight ∠ | CNN δx ∠ (true) |")
print("|---|---|---|---|---|---|---|")
for rule in rules:
    cells = []
    for model in ("mlp", "cnn"):
        s = json.load(open(f"{out}/{model}-{rule.replace(':', '-').replace('=', '-')}/summary.json"))
        a = s["alignment"]
        def mean(metric):
            v = [x for k, x in a.items() if k.endswith("." + metric) and x is not None]
            return f"{statistics.mean(v):.1f}°" if v else "—"
        cells += [f"{100 * s['test_accuracy']:.1f} %", mean("weight_angle"), mean("true_grad_angle")]
    label = rule.replace(":source=", " (") + (")" if ":" in rule else "")
    print(f"| {label} | " + " | ".join(cells) + " |")
PY
