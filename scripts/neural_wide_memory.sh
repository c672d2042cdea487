#!/usr/bin/env bash
# neural-fit's memory on a wide layer (README, "Comparing with neural data"): 2,000 random
# 128-px stimuli shown to time_decay_shallow at 128 px (one training step on synthetic images;
# conv1 = 64 × 32 × 32 = 65,536 units), conv1 and conv5 at all 16 steps, 2 folds, random
# responses; prints GNU time's wall clock and peak resident set. About 20 minutes on 2 cores and
# 8 GB of scratch disk under $OUT (removed at the end). Needs numpy in $PYTHON.
set -euo pipefail
cd "$(dirname "$0")/.."
PLASTIC="${PLASTIC:-${CARGO_TARGET_DIR:-target}/release/plastic}"
PYTHON="${PYTHON:-python3}"
OUT="${OUT:-$(mktemp -d)}"
mkdir -p "$OUT"
"$PLASTIC" train --device cpu --config configs/time_decay_shallow.toml --set data.kind=synthetic --set data.classes=4 \
    --set data.resolution=128 --set data.synthetic.size=128 --set data.synthetic.channels=3 --set data.synthetic.samples=24 \
    --set data.synthetic.classes=4 --set train.steps=1 --set train.batch_size=4 --set train.eval_batch_size=4 \
    --set train.warmup_steps=0 --out "$OUT/runs"
"$PYTHON" - "$OUT" <<'PY'
import sys
import numpy as np
out, n = sys.argv[1], 2000
rng = np.random.default_rng(0)
images = np.kron(rng.random((n, 16, 16, 3)), np.ones((8, 8, 1)))  # 128 px, 8 × 8 blocks
ids = np.array([f"s{i:04d}" for i in range(n)])
np.savez(f"{out}/stimuli.npz", images=(images * 255).astype(np.uint8), stimulus_id=ids)
np.savez(f"{out}/responses.npz", responses=rng.standard_normal((2, n, 20)).astype(np.float32), stimulus_id=ids)
PY
/usr/bin/time -v "$PLASTIC" neural-fit --run "$OUT/runs/time_decay_shallow" --stimuli "$OUT/stimuli.npz" \
    --responses "$OUT/responses.npz" --folds 2 --layers conv1,conv5 --out "$OUT/fit" 2> "$OUT/time.log"
grep -E "Elapsed|Maximum resident" "$OUT/time.log"
rm -rf "$OUT/fit"
