#!/usr/bin/env bash
# The recipe of the shipped latent_flow_cifar10: Neon (docs/neon.md) on the latent flow model as trained on CPU,
# scored, its likelihood bound measured and audited, assembled into OUT_DIR/latent_flow_cifar10 with the base's
# scores and grid kept on its card.
#
#   bash checkpoints/neon_latent_on_cpu.sh OUT_DIR       (from the repository root; about an hour on 2 CPU cores)
#
# Then: rm -rf checkpoints/latent_flow_cifar10 && cp -r OUT_DIR/latent_flow_cifar10 checkpoints/
# The base is checkpoints/latent_flow_cifar10 while it is still the base (sha256 below), else that folder as of
# commit 58b2ad6, taken from git. Every step skips what OUT_DIR already holds, so a killed run resumes.
set -euo pipefail
OUT=${1:?usage: neon_latent_on_cpu.sh OUT_DIR}
: "${GENSTUDIO_DATA:?set GENSTUDIO_DATA=/path/to/data (the folder holding cifar10/)}"
BASE_SHA=925f03f20972ff77f6996904af36f9ed266f332a122aad7ceeb5541da0dbd6ca
mkdir -p "$OUT/scores"
exec 9>/tmp/genstudio-heavy.lock
flock 9
log() { echo "$(date +%T) $*"; }
sha() { python -c "import sys; from genstudio.evaluation.metrics import checkpoint_hash as h; print(h(sys.argv[1]))" "$1"; }

BASE=checkpoints/latent_flow_cifar10
if [ "$(sha $BASE)" != $BASE_SHA ]; then
    BASE=$OUT/base/checkpoints/latent_flow_cifar10
    [ -d "$BASE" ] || { mkdir -p "$OUT/base" && git archive 58b2ad6 "checkpoints/latent_flow_cifar10" | tar -x -C "$OUT/base"; }
    [ "$(sha "$BASE")" = $BASE_SHA ] || { echo "$BASE is not the latent flow base" >&2; exit 1; }
fi

log "neon on $BASE"  # S: 6,000 images at 10 steps, guidance 1; w selected on seeds 50,000.. at n = 2,000
[ -f "$OUT/neon/model/metrics.json" ] || genstudio neon "$BASE" --out "$OUT/neon" --self-guidance 1 \
    --weights=-0.5,0,0.5,1,1.5,2,3,4,6,8 --n-select 2000 --guidance 1 --no-progress

for seed in 0 10000; do  # the base card's protocol, on the report seeds and on a second set
    f=$OUT/scores/fp32_dpmpp_2m_10_seed$seed.json
    log "score: seeds $seed.."
    [ -f "$f" ] || genstudio eval "$OUT/neon/model" --sampler dpmpp_2m --steps 10 --grid logsnr --guidance 1 \
        --n 10000 --seed $seed --precision fp32 --no-progress --out "$f"
done

log "assemble $OUT/latent_flow_cifar10"
python - "$OUT" <<'PY'
import json, sys
from pathlib import Path

from genstudio.neon import ship

out = Path(sys.argv[1])
ship(out / "neon", out / "latent_flow_cifar10", [json.loads(f.read_text()) for f in sorted((out / "scores").glob("*.json"))],
     recipe="bash checkpoints/neon_latent_on_cpu.sh OUT (docs/neon.md)",
     base_note="the base was checkpoints/latent_flow_cifar10 as of commit 58b2ad6, which this model replaced; its "
               "card's scores are kept under base_scores and its samples.png as base_samples.png")
PY

log "likelihood and audit"  # the base card's protocols
genstudio likelihood "$OUT/latent_flow_cifar10" --n 100 --rtol 1e-3 --atol 1e-3 --batch-size 100 --record
genstudio audit "$OUT/latent_flow_cifar10" --n 512 --precision bf16 --out "$OUT/audit" --record
log "done: $OUT/latent_flow_cifar10"
