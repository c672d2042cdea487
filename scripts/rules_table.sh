#!/usr/bin/env bash
# Trains every learning rule with the same config as backprop — nothing but `rule.kind`
# changed — on the quickstart CNN (configs/quickstart.toml), the ConvRNN quickstart
# (configs/convrnn_quickstart.toml) and the MLP of configs/rules_mlp.toml, and prints README's
# rules table: test accuracy and the final alignment angles, averaged over the layers whose
# B carries an error (all but the first).
#   scripts/rules_table.sh [extra plastic train arguments, e.g. --set seed=1]
#   MODELS="cnn" scripts/rules_table.sh      # only some of the models (cnn convrnn mlp)
#   RULES="backprop kolen_pollack" scripts/rules_table.sh   # only some of the rules
#   TABLE_ONLY=1 scripts/rules_table.sh      # print the table of the runs already in $OUT
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/plastic-target}"
cargo build --release --quiet
PLASTIC="$CARGO_TARGET_DIR/release/plastic"
OUT="${OUT:-runs/rules-table}"
MODELS="${MODELS:-cnn convrnn mlp}"
# Each entry is a rule, optionally with one more rule setting after a colon.
RULES="${RULES:-backprop feedback_alignment sign_symmetry kolen_pollack weight_mirror weight_mirror:source=data information_alignment symmetric_alignment activation_alignment direct_feedback_alignment}"
config() { case "$1" in cnn) echo configs/quickstart.toml ;; convrnn) echo configs/convrnn_quickstart.toml ;; mlp) echo configs/rules_mlp.toml ;; esac; }
for model in $MODELS; do
    [ -n "${TABLE_ONLY:-}" ] && break
    for entry in $RULES; do
        rule="${entry%%:*}"
        extra=()
        [ "$entry" != "$rule" ] && extra=(--set "rule.${entry#*:}")
        # DFA has no ConvRNN form: plastic refuses it with a config error.
        [ "$model" = convrnn ] && [ "$rule" = direct_feedback_alignment ] && continue
        "$PLASTIC" train --config "$(config "$model")" --device cpu --out "$OUT" --force \
            --set "name=$model-${entry//[:=]/-}" --set "rule.kind=$rule" "${extra[@]}" "$@" 2>/dev/null || true
    done
done
python3 - "$OUT" "$MODELS" $RULES <<'PY'
import json, os, sys, statistics
out, models, rules = sys.argv[1], sys.argv[2].split(), sys.argv[3:]
names = {"cnn": "CNN quickstart", "convrnn": "ConvRNN quickstart", "mlp": "MLP"}
print("| rule | " + " | ".join(f"{names[m]} test acc | weight ∠ | δx ∠ (true)" for m in models) + " |")
print("|---|" + "---|---|---|" * len(models))
for rule in rules:
    cells = []
    for model in models:
        path = f"{out}/{model}-{rule.replace(':', '-').replace('=', '-')}/summary.json"
        if not os.path.exists(path):
            cells += ["—", "—", "—"]
            continue
        s = json.load(open(path))
        # The first layer (the one on the image) of every model here is conv1 or fc1.
        a = {k: v for k, v in s["alignment"].items() if not k.startswith(("alignment.conv1.", "alignment.fc1."))}
        def mean(metric):
            v = [x for k, x in a.items() if k.endswith("." + metric) and x is not None]
            return f"{statistics.mean(v):.1f}°" if v else "—"
        acc = f"{100 * s['test_accuracy']:.1f} %" if s.get("status") == "completed" else s.get("status", "?")
        cells += [acc, mean("weight_angle"), mean("true_grad_angle")]
    label = rule.replace(":source=", " (") + (")" if ":" in rule else "")
    print(f"| {label} | " + " | ".join(cells) + " |")
PY
