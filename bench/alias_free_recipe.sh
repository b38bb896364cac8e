#!/usr/bin/env bash
# The alias-free comparison of docs/alias-free.md: one recipe and budget, trained twice, once with the standard
# resampling (strided convolution, nearest-neighbour upsampling) and once with the filtered one; each scored on
# c10 features at n = N (seeds 0..N-1; the standard network again on seeds N..2N-1 for the seed-to-seed noise),
# then the shift-equivariance figure of both trained networks.
#
#   bash bench/alias_free_recipe.sh RUN_DIR      (from the repository root; GENSTUDIO_DATA must hold cifar10/)
#
# Writes RUN_DIR/<arm>/model (arm: conv, filtered), RUN_DIR/<arm>_train_s (training wall time),
# RUN_DIR/eval_*.json and RUN_DIR/shift/{shift.json,shift.png}. Finished stages are skipped, so a killed run
# continues. Every heavy step takes /tmp/genstudio-heavy.lock.
# Knobs (environment): CONFIG (configs/edm_tiny_cifar10.toml; on a GPU configs/flow_small_cifar10.toml), STEPS (400),
# BATCH (64), N (2000), SAMPLER (dpmpp_2m), SAMPLER_STEPS (10), PRECISION (bf16).
set -euo pipefail
RUN=${1:?usage: alias_free_recipe.sh RUN_DIR}
CONFIG=${CONFIG:-configs/edm_tiny_cifar10.toml} STEPS=${STEPS:-400} BATCH=${BATCH:-64} N=${N:-2000}
SAMPLER=${SAMPLER:-dpmpp_2m} SAMPLER_STEPS=${SAMPLER_STEPS:-10} PRECISION=${PRECISION:-bf16}
mkdir -p "$RUN"
heavy() { flock /tmp/genstudio-heavy.lock "$@"; }

for arm in conv filtered; do
  [ -f "$RUN/$arm/model/genstudio.json" ] && continue
  (
    flock 9
    start=$SECONDS
    python -m genstudio.train --config "$CONFIG" --train.output_dir "$RUN/$arm" --model.unet.resample "$arm" \
      --train.max_steps "$STEPS" --train.batch_size "$BATCH" --train.warmup_steps $((STEPS / 8)) \
      --train.sample_every 0 --train.progress false > "$RUN/train_$arm.log" 2>&1
    echo $((SECONDS - start)) > "$RUN/${arm}_train_s"
  ) 9> /tmp/genstudio-heavy.lock
done

score() {  # arm first_seed
  local out="$RUN/eval_$1_seed$2.json"
  [ -s "$out" ] && return
  heavy python -m genstudio.cli eval "$RUN/$1/model" --n "$N" --seed "$2" --sampler "$SAMPLER" \
    --steps "$SAMPLER_STEPS" --guidance 1 --precision "$PRECISION" --no-progress --out "$out" \
    > "$RUN/eval_$1_seed$2.log"
}
score conv 0
score filtered 0
score conv "$N"

[ -f "$RUN/shift/shift.json" ] || heavy python bench/alias_free_shift.py --standard "$RUN/conv/model" \
  --alias-free "$RUN/filtered/model" --out "$RUN/shift"
for f in "$RUN"/eval_*.json; do
  python -c "import json, sys; m = json.load(open(sys.argv[1]))['metrics']
print(sys.argv[1], *(f'{k} {m[k]:.4g}' for k in ('fid', 'is_mean', 'class_accuracy') if k in m))" "$f"
done
for arm in conv filtered; do echo "$arm train_s $(cat "$RUN/${arm}_train_s")"; done
