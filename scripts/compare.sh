#!/usr/bin/env bash
# plastic against PyTorch on the same model, batch, input, optimiser and thread count: for each
# case, one untimed warm-up run of each, then PAIRS alternating process pairs (plastic, PyTorch);
# the median images/s and peak memory of each side and their ratio. Prints and appends one JSON
# line per case to bench/results/compare-$DEVICE-<date>.jsonl.
#
#   scripts/compare.sh                        # every CPU case
#   scripts/compare.sh knet4 resnet18         # some of them
#   PAIRS=7 THREADS=2 PYTHON=~/.cache/torch-venv/bin/python scripts/compare.sh
#   DEVICE=cuda PLASTIC_DEVICE=wgpu scripts/compare.sh resnet18_224 convnet
#   DEVICE=cuda PLASTIC_DEVICE=wgpu PRECISION=bf16 scripts/compare.sh resnet18_224   # mixed precision on both sides
#   STEPS=2 ROUNDS=2 PAIRS=1 … scripts/compare.sh rgc_shallow_224   # fewer timed steps per process
#   NOTE="plastic built with --features vulkan" …                     # a note on each line
#   RAW=raw.jsonl …                                                    # also every process's own line
#   RESULTS=out.jsonl …                                                # the medians there instead
#
# Cases (batch 64 unless said): knet4, convnet, alexnet, resnet18 at 32 px; alexnet_64 (64 px);
# resnet18_224 (224 px, 1000 classes); the ConvRNNs convrnn_quickstart (8 px, 1 channel, T = 7)
# and rgc_shallow_64 (64 px, T = 8), batch 32; rgc_shallow_224 (224 px, T = 16, batch 16: a GPU
# case). PyTorch's side is scripts/bench_pytorch.py (it
# installs nothing: `pip install torch` into $PYTHON's environment); a ConvRNN's
# twin is plastic's own model exported with `--format pytorch` (after one training step on
# synthetic images of the case's size) and rebuilt by python/plastic_torch.py.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/plastic-target}"
PAIRS="${PAIRS:-5}"
THREADS="${THREADS:-2}"
DEVICE="${DEVICE:-cpu}"
PLASTIC_DEVICE="${PLASTIC_DEVICE:-$DEVICE}"
PYTHON="${PYTHON:-python3}"
# f32, or mixed precision bf16 / f16: plastic's train.precision against PyTorch's autocast.
PRECISION="${PRECISION:-f32}"
if [ -z "${PLASTIC:-}" ]; then
    cargo build --release --quiet
    PLASTIC="$CARGO_TARGET_DIR/release/plastic"
fi
"$PYTHON" -c "import torch" 2>/dev/null || { echo "compare: $PYTHON cannot import torch (pip install torch)" >&2; exit 2; }
export RAYON_NUM_THREADS="$THREADS" OMP_NUM_THREADS="$THREADS" MKL_NUM_THREADS="$THREADS"

# name → "model batch resolution classes [channels config set…]" (a ConvRNN's model is its config)
declare -A CASES=(
    [knet4]="knet4 64 32 10" [convnet]="convnet 64 32 10" [alexnet]="alexnet 64 32 10"
    [resnet18]="resnet18 64 32 10" [alexnet_64]="alexnet 64 64 10" [resnet18_224]="resnet18 64 224 1000"
    [convrnn_quickstart]="convrnn 32 8 10 1 configs/convrnn_quickstart.toml"
    [rgc_shallow_64]="convrnn 32 64 10 3 configs/rgc_shallow.toml model.convrnn.times=8"
    [rgc_shallow_224]="convrnn 16 224 1000 3 configs/rgc_shallow.toml model.convrnn.times=16"
)
ORDER=(knet4 convnet alexnet resnet18 alexnet_64 resnet18_224 convrnn_quickstart rgc_shallow_64 rgc_shallow_224)
[ "$#" -gt 0 ] && ORDER=("$@")
mkdir -p bench/results
OUT="${RESULTS:-bench/results/compare-$DEVICE-$(date +%Y-%m-%d).jsonl}"

field() { "$PYTHON" -c "import json,sys; v=json.loads(sys.stdin.read().strip().splitlines()[-1]).get('$1'); print('null' if v is None else v)"; }
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }

for name in "${ORDER[@]}"; do
    spec="${CASES[$name]:-}"
    [ -n "$spec" ] || { echo "compare: unknown case '$name' (cases: ${!CASES[*]})" >&2; exit 2; }
    read -r model batch res classes channels config sets <<< "$spec"
    channels="${channels:-3}"
    steps=5; rounds=3
    # Seconds-long steps on the CPU: fewer per process (still the median of 3 rounds).
    [ "$DEVICE" = cpu ] && [ "$model" = resnet18 ] && steps=2
    [ "$res" -ge 100 ] && [ "$DEVICE" = cpu ] && { steps=1; rounds=2; }
    steps="${STEPS:-$steps}"; rounds="${ROUNDS:-$rounds}"
    shape=(--batch "$batch" --resolution "$res" --channels "$channels" --classes "$classes" --steps "$steps" --rounds "$rounds")
    if [ "$model" = convrnn ]; then
        overrides=(); for s in $sets; do overrides+=(--set "$s"); done
        export_dir="$(mktemp -d)/$name"
        "$PLASTIC" train --device cpu --config "$config" "${overrides[@]}" --set name="$name" --set data.kind=synthetic \
            --set data.classes="$classes" --set data.resolution="$res" --set data.synthetic.size="$res" \
            --set data.synthetic.channels="$channels" --set data.synthetic.classes="$classes" --set data.synthetic.samples=40 \
            --set train.steps=1 --set train.batch_size=4 --set train.warmup_steps=0 --out "$(dirname "$export_dir")/runs" > /dev/null 2>&1
        "$PLASTIC" export --run "$(dirname "$export_dir")/runs/$name" --format pytorch --output "$export_dir" 2> /dev/null
        run_plastic() { "$PLASTIC" bench --device "$PLASTIC_DEVICE" --config "$config" "${overrides[@]}" --set train.precision="$PRECISION" "${shape[@]}" | tail -n 1; }
        run_torch() { "$PYTHON" scripts/bench_pytorch.py --device "$DEVICE" --threads "$THREADS" --precision "$PRECISION" --export "$export_dir" --batch "$batch" --steps "$steps" --rounds "$rounds"; }
    else
        run_plastic() { "$PLASTIC" bench --device "$PLASTIC_DEVICE" --model "$model" --set train.precision="$PRECISION" "${shape[@]}" | tail -n 1; }
        run_torch() { "$PYTHON" scripts/bench_pytorch.py --device "$DEVICE" --threads "$THREADS" --precision "$PRECISION" --model "$model" "${shape[@]}"; }
    fi
    run_plastic > /dev/null
    run_torch > /dev/null
    p_ips=(); t_ips=(); p_mem=(); t_mem=()
    for ((i = 0; i < PAIRS; i++)); do
        p=$(run_plastic); t=$(run_torch)
        [ -n "${RAW:-}" ] && printf '%s\n%s\n' "$p" "$t" >> "$RAW"
        p_ips+=("$(echo "$p" | field images_per_second)"); p_mem+=("$(echo "$p" | field peak_memory_mib)")
        t_ips+=("$(echo "$t" | field images_per_second)"); t_mem+=("$(echo "$t" | field peak_memory_mib)")
        p_params=$(echo "$p" | field params); t_params=$(echo "$t" | field params)
    done
    pi=$(median "${p_ips[@]}"); ti=$(median "${t_ips[@]}"); pm=$(median "${p_mem[@]}"); tm=$(median "${t_mem[@]}")
    line=$("$PYTHON" -c "import json,sys
a=sys.argv[1:]
print(json.dumps({'case': a[0], 'device': a[1], 'precision': a[11], 'threads': int(a[2]),
  'plastic_images_per_s': float(a[3]), 'pytorch_images_per_s': float(a[4]), 'ratio': float(a[3]) / float(a[4]),
  'plastic_peak_mib': float(a[5]), 'pytorch_peak_mib': float(a[6]), 'plastic_params': int(a[7]), 'pytorch_params': int(a[8]),
  'pairs': int(a[9]), 'steps': int(a[13]), 'rounds': int(a[14]), 'plastic_device': a[12], 'date': a[10]} | ({'note': a[15]} if a[15] else {})))" \
        "$name" "$DEVICE" "$THREADS" "$pi" "$ti" "$pm" "$tm" "$p_params" "$t_params" "$PAIRS" "$(date +%Y-%m-%d)" "$PRECISION" "$PLASTIC_DEVICE" "$steps" "$rounds" "${NOTE:-}")
    echo "$line" | tee -a "$OUT"
done
