#!/usr/bin/env bash
# For a GPU: train the evaluator's CIFAR-10 classifier, install it in
# checkpoints/cifar10_classifier/ if it is more accurate than the shipped one, then bring every shipped
# checkpoint's recorded c10 scores up to date under it (`genstudio rescore`: same protocols, stale quick
# records dropped).
#
#   bash checkpoints/classifier_on_gpu.sh OUT_DIR       (from the repository root)
#
# OUT_DIR receives the trained weights, the logs and a copy of each checkpoint's updated metrics.json.
# Knobs (environment): DATA (folder with train.tar.gz and test.tar.gz; default $GENSTUDIO_DATA/cifar10),
# CLF_ARGS (train_classifier options, e.g. `--time-budget 260` to fit the epochs to a lease), CKPTS (the
# checkpoints to rescore, in order), RESCORE_LIMIT (seconds; rescore stops there, every record finished so
# far is kept).
set -euo pipefail
OUT=${1:?usage: classifier_on_gpu.sh OUT_DIR}
DATA=${DATA:-${GENSTUDIO_DATA:?"set GENSTUDIO_DATA=/path/to/data (the folder holding cifar10/), or DATA=/path/to/cifar10"}/cifar10}
CLF_ARGS=${CLF_ARGS:-}  # train_classifier's defaults are the shipped classifier's recipe
SHIPPED=checkpoints/cifar10_classifier/classifier.safetensors
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

# shellcheck disable=SC2086
python -m genstudio.evaluation.train_classifier --train "$DATA/train.tar.gz" --test "$DATA/test.tar.gz" $CLF_ARGS \
  --out "$OUT/classifier.safetensors" 2>&1 | tee "$OUT/classifier.log"
python - "$OUT/classifier.safetensors" "$SHIPPED" <<'PY' || { echo "kept the shipped classifier"; exit 0; }
import shutil, sys
from genstudio.evaluation.classifier import read_classifier_meta
new, shipped = (read_classifier_meta(p)["test_accuracy"] for p in sys.argv[1:])
print(f"new classifier {100 * new:.2f}%, shipped {100 * shipped:.2f}% (flip-averaged, offline test split)")
if new <= shipped:
    sys.exit(1)
shutil.copyfile(sys.argv[1], sys.argv[2])
PY
# shellcheck disable=SC2086
timeout "${RESCORE_LIMIT:-0}" python -m genstudio.cli rescore ${CKPTS:-checkpoints/*_cifar10} --drop-quick \
  --reference "$DATA/train.tar.gz" --batch-size 1000 --no-progress 2>&1 | tee "$OUT/rescore.log" \
  || echo "rescore stopped before the end (RESCORE_LIMIT ${RESCORE_LIMIT:-none}); records done so far are kept"
for f in checkpoints/*_cifar10/metrics.json; do
  name=$(basename "$(dirname "$f")")
  mkdir -p "$OUT/$name" && cp "$f" "$OUT/$name/metrics.json"
done
ls -la "$OUT"
