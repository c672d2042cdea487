#!/usr/bin/env bash
# The architecture-search demo of README: configs/searches/demo.toml (TPE) beside a random
# search of the same budget, both at once (one worker, one thread each), then the guided
# search's three best trials retrained with three seeds each (mean ± sd of test accuracy).
#   scripts/search_demo.sh                 # about 45 minutes on a 2-core CPU
#   TRIALS=8 scripts/search_demo.sh        # a shorter budget
#   RESUME=--resume scripts/search_demo.sh # continue after an interrupt
set -euo pipefail
cd "$(dirname "$0")/.."
PLASTIC="${PLASTIC:-${CARGO_TARGET_DIR:-$HOME/.cache/plastic-target}/release/plastic}"
OUT="${OUT:-searches}"
TRIALS="${TRIALS:-20}"
SEEDS="${SEEDS:-1 2 3}"
mkdir -p "$OUT"
"$PLASTIC" search --config configs/searches/demo.toml --set "trials=$TRIALS" --out "$OUT" ${RESUME:-} > "$OUT/demo.leaderboard.txt" 2> "$OUT/demo.log" &
guided=$!
"$PLASTIC" search --config configs/searches/demo.toml --set "trials=$TRIALS" --set strategy=random --set name=demo-random --out "$OUT" ${RESUME:-} > "$OUT/demo-random.leaderboard.txt" 2> "$OUT/demo-random.log" &
random=$!
wait $guided
wait $random
for s in demo demo-random; do
    echo "== $s (best 5 by validation accuracy)"
    head -6 "$OUT/$s.leaderboard.txt"
done

# The guided search's top 3, retrained with other seeds.
top=$(python3 - "$OUT/demo/results.csv" <<'PY'
import csv, sys
rows = [r for r in csv.DictReader(open(sys.argv[1])) if r["status"] == "ok"]
rows.sort(key=lambda r: -float(r["validation_accuracy"]))
print(" ".join(r["trial"] for r in rows[:3]))
PY
)
for t in $top; do
    cfg=$(printf "%s/demo/trials/%04d/config.toml" "$OUT" "$t")
    for s in $SEEDS; do
        name=$(printf "demo-top-%04d-seed%d" "$t" "$s")
        [ -f "$OUT/retrain/$name/summary.json" ] && continue
        "$PLASTIC" train --config "$cfg" --set "seed=$s" --set "name=$name" --set train.threads=2 --out "$OUT/retrain" --force > /dev/null 2>&1
    done
done
python3 - "$OUT" $top <<'PY'
import json, statistics, sys, csv
out, top = sys.argv[1], sys.argv[2:]
search = {r["trial"]: r for r in csv.DictReader(open(f"{out}/demo/results.csv"))}
print("| trial | search val % | params | retrained test % (3 seeds, mean ± sd) |")
print("|---|---|---|---|")
for t in top:
    accs = []
    for s in (1, 2, 3):
        try:
            accs.append(100 * json.load(open(f"{out}/retrain/demo-top-{int(t):04d}-seed{s}/summary.json"))["test_accuracy"])
        except FileNotFoundError:
            pass
    sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
    r = search[t]
    print(f"| {t} | {100*float(r['validation_accuracy']):.1f} | {r['params']} | {statistics.mean(accs):.1f} ± {sd:.1f} |")
PY
