#!/usr/bin/env bash
# The recipe of the shipped ect_cifar10: Neon (docs/neon.md) on the ECT model as trained by train_on_gpu.sh,
# scored and audited, assembled into OUT_DIR/ect_cifar10 with the base's scores and grid kept on its card.
#
#   bash checkpoints/neon_ect_on_cpu.sh OUT_DIR       (from the repository root; about 1 hour on 2 CPU cores)
#
# Then: rm -rf checkpoints/ect_cifar10 && cp -r OUT_DIR/ect_cifar10 checkpoints/ && python -m tests.golden.record
# The base is checkpoints/ect_cifar10 while it is still the ECT model (sha256 below), else that folder as of
# commit b6dd79d, taken from git. Every step skips what OUT_DIR already holds, so a killed run resumes.
set -euo pipefail
OUT=${1:?usage: neon_ect_on_cpu.sh OUT_DIR}
: "${GENSTUDIO_DATA:?set GENSTUDIO_DATA=/path/to/data (the folder holding cifar10/)}"
BASE_SHA=a6182608f66897aa7adf0e2818aa6e8f751b36f0b2c3bd2476ef8d04aa012567
C10_SHA=7646196bd73d6714d04e5a75d3fecf90163eb18352245a31cd76cd7e32c5c281  # the c10 classifier the card uses
mkdir -p "$OUT/scores"
exec 9>/tmp/genstudio-heavy.lock
flock 9
log() { echo "$(date +%T) $*"; }
sha() { python -c "import sys; from genstudio.evaluation.metrics import checkpoint_hash as h; print(h(sys.argv[1]))" "$1"; }

BASE=checkpoints/ect_cifar10
if [ "$(sha $BASE)" != $BASE_SHA ]; then
    BASE=$OUT/base/checkpoints/ect_cifar10
    [ -d "$BASE" ] || { mkdir -p "$OUT/base" && git archive b6dd79d checkpoints/ect_cifar10 | tar -x -C "$OUT/base"; }
    [ "$(sha "$BASE")" = $BASE_SHA ] || { echo "$BASE is not the ECT base" >&2; exit 1; }
fi

log "neon on $BASE"  # S: 6,000 images at 2 steps, guidance 2; w selected on seeds 50,000.. at n = 2,000
[ -f "$OUT/neon/model/metrics.json" ] || genstudio neon "$BASE" --out "$OUT/neon" --self-steps 2 --self-guidance 2 \
    --weights 0,0.25,0.5,1,1.5,2,2.5,3,4 --n-select 2000 --sampler consistency --steps 2 --guidance 1 --precision bf16

for cell in "2 0" "1 0" "1 100000"; do  # steps, first seed: the base card's three scores, on the same protocol
    set -- $cell
    f=$OUT/scores/fp32_s$1_seed$2.json
    log "score: $1 steps, seeds $2.."
    [ -f "$f" ] || genstudio eval "$OUT/neon/model" --sampler consistency --steps "$1" --n 10000 --seed "$2" \
        --precision fp32 --no-progress --out "$f"
done

log "assemble $OUT/ect_cifar10"
python - "$OUT" "$BASE" $C10_SHA <<'EOF'
import json, shutil, sys
from pathlib import Path

from genstudio.atomic import write_json
from genstudio.evaluation.metrics import checkpoint_hash
from genstudio.evaluation.records import record_scores, redraw_plot
from genstudio.publish import publish

out, base, c10 = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
dest = out / "ect_cifar10"
if dest.exists():
    shutil.rmtree(dest)
publish(out / "neon", dest)  # the merged model, its samples.png and sampling time; neon kept base_samples.png
neon = json.loads((out / "neon" / "model" / "metrics.json").read_text())["neon"]
base_card = json.loads((base / "metrics.json").read_text())
card = json.loads((dest / "metrics.json").read_text())
neon["base_note"] = ("the base was checkpoints/ect_cifar10 as of commit b6dd79d, which this model replaced; its "
                     "card's scores are kept under base_scores and its samples.png as base_samples.png")
card["neon"], card["base_scores"] = neon, base_card["scores"]
t = base_card["training"]
card["training"].update(
    note=t["note"] + f" Then improved by Neon (w = {neon['w']:g}) on this machine's CPU: {neon['finetune']['images']} "
    "images of fine-tuning on its own samples, merged as theta = (1 + w) theta_base - w theta_finetuned.",
    recipe=t["recipe"] + "; then bash checkpoints/neon_ect_on_cpu.sh OUT (docs/neon.md)")
write_json(dest / "metrics.json", card)
record_scores(dest, [json.loads(f.read_text()) for f in sorted((out / "scores").glob("*.json"))])
redraw_plot(dest, weights_sha256=c10)
assert (dest / "base_samples.png").is_file() and checkpoint_hash(dest) == checkpoint_hash(out / "neon" / "model")
EOF

log "audit"
genstudio audit "$OUT/ect_cifar10" --n 512 --precision bf16 --out "$OUT/audit" --record
log "done: $OUT/ect_cifar10"
