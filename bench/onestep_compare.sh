#!/usr/bin/env bash
# The one-step comparison of docs/onestep.md: six one-step routes from the studio's default flow model, each on the
# same budget of student images (STEPS x BATCH; the pairs routes also get that many teacher pairs), scored on one
# protocol (c10 features, n = N seeds 0..N-1, bf16 sampling) at NFE 1 and 2, with the teacher at 10 NFE.
#
#   bash bench/onestep_compare.sh RUN_DIR         (from the repository root; GENSTUDIO_DATA must hold cifar10/)
#
# RUN_DIR/<method>/export are the trained models as they would ship (fp16, with their cards), scored into
# RUN_DIR/eval_<method>_<nfe>.json; RUN_DIR/table.md is the table. Finished stages are skipped, so a killed run
# continues. Every heavy step takes /tmp/genstudio-heavy.lock.
# Knobs (environment): STEPS (129), BATCH (16), LR (5e-5), EMA (0.5 kimg half-life), N (10000), PRECISION (bf16).
set -euo pipefail
RUN=${1:?usage: onestep_compare.sh RUN_DIR}
STEPS=${STEPS:-129} BATCH=${BATCH:-16} N=${N:-10000} PRECISION=${PRECISION:-bf16}
TEACHER=checkpoints/flow_small_cifar10
mkdir -p "$RUN"
heavy() { flock /tmp/genstudio-heavy.lock "$@"; }
log() { echo "[$(date +%T)] $*" | tee -a "$RUN/log.txt"; }

if [ ! -f "$RUN/pairs_seconds" ]; then  # the teacher's (noise, image) pairs, timed once the lock is held
  (
    flock 9
    start=$SECONDS
    python -m genstudio.cli reflow generate "$TEACHER" --out "$RUN/pairs" --n $((STEPS * BATCH)) \
      --sampler dpmpp_2m --steps 10 --batch-size 256
    echo $((SECONDS - start)) > "$RUN/pairs_seconds"
  ) 9> /tmp/genstudio-heavy.lock
fi
train() {  # name config [overrides...]
  local name=$1 config=$2; shift 2
  [ -f "$RUN/$name/model/genstudio.json" ] && return
  log "training $name"
  heavy python -m genstudio.train --config "configs/$config.toml" --train.output_dir "$RUN/$name" \
    --train.max_steps "$STEPS" --train.batch_size "$BATCH" --train.lr "${LR:-5e-5}" \
    --train.ema_half_life_kimg "${EMA:-0.5}" "$@" > "$RUN/train_$name.log" 2>&1
}
train score_mismatching score_mismatching_cifar10
train sign sign_cifar10
train ect ect_cifar10 --train.init_from checkpoints/edm_small_cifar10 --objective.options.double_every $((STEPS / 4))
train cd cd_small_cifar10
train distill distill_small_cifar10 --data.source "$RUN/pairs"
train caf caf_small_cifar10 --data.source "$RUN/pairs"

for m in score_mismatching sign ect cd distill caf; do  # what is scored is what would ship: fp16 weights
  [ -f "$RUN/$m/export/genstudio.json" ] || heavy python -m genstudio.cli export "$RUN/$m" --to "$RUN/$m/export" \
    --fp16 > "$RUN/export_$m.log" 2>&1
done

score() {  # name checkpoint sampler steps
  local out="$RUN/eval_$1.json"
  [ -s "$out" ] && return
  log "scoring $1"
  heavy python -m genstudio.cli eval "$2" --sampler "$3" --steps "$4" --n "$N" --precision "$PRECISION" \
    --no-progress --out "$out" > "$RUN/eval_$1.log" 2>&1
}
score teacher_10 "$TEACHER" dpmpp_2m 10
score score_mismatching_1 "$RUN/score_mismatching/export" decode 1
score score_mismatching_2 "$RUN/score_mismatching/export" consistency 2
score sign_1 "$RUN/sign/export" decode 1
score sign_2 "$RUN/sign/export" reapply 2
for m in ect cd; do
  score ${m}_1 "$RUN/$m/export" consistency 1
  score ${m}_2 "$RUN/$m/export" consistency 2
done
score distill_1 "$RUN/distill/export" euler 1
score distill_2 "$RUN/distill/export" euler 2
score caf_2 "$RUN/caf/export" caf 1  # CAF's one step is 2 evaluations: the initial velocity and one acceleration
python bench/onestep_table.py "$RUN" | tee "$RUN/table.md"
