#!/usr/bin/env bash
# Learned grids and Neon on the studio's default model, measured at n = 10,000 on the report seeds, on a GPU
# (about 5-9 minutes on one H200 for the small UNet), leaving under OUT only what must come back:
#
#   OUT/improve.json     every score (before / after, each grid at each NFE, the seed-to-seed noise), the Neon record
#   OUT/grids.json       the learned grids (copy into checkpoints/<name>/ if they win on the report seeds)
#   OUT/neon_model/      the Neon model, fp16, with its card (commit it only if improve.json says it is better)
#   OUT/log.txt
#
#   bash bench/gpu_improve.sh OUT           (from the repository root; GENSTUDIO_DATA must hold cifar10/)
#
# Knobs (environment): CKPT (default checkpoints/$(cat checkpoints/DEFAULT)), N_REPORT (10000), NFES (3,5,10),
# EXTRA (further bench/improve.py flags, e.g. "--n-self 6000 --precision bf16").
set -euo pipefail
OUT=${1:?usage: gpu_improve.sh OUT_DIR}
CKPT=${CKPT:-checkpoints/$(cat checkpoints/DEFAULT)}
WORK=$(mktemp -d)
mkdir -p "$OUT"
# shellcheck disable=SC2086
python bench/improve.py --checkpoint "$CKPT" --work "$WORK" --device "${DEVICE:-cuda}" --batch-size 1000 \
  --n-report "${N_REPORT:-10000}" --grid-nfes "${NFES:-3,5,10}" --out "$OUT/improve.json" ${EXTRA:-} \
  2>&1 | tee "$OUT/log.txt"
cp "$WORK/base/grids.json" "$OUT/grids.json"
rm -rf "$OUT/neon_model" && cp -r "$WORK/neon/model" "$OUT/neon_model"
du -sh "$OUT"/*
