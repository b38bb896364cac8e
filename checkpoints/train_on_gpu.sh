#!/usr/bin/env bash
# The recipe of the shipped checkpoints: train one model per family at once on one GPU, each stopped by
# wall time (timeout sends SIGTERM; the trainer then checkpoints, exports model/ from its EMA, and exits),
# plus the evaluator's CIFAR-10 classifier; then pack each run with fp16 weights.
#
#   bash checkpoints/train_on_gpu.sh OUT_DIR       (from the repository root)
#
# Then, on any machine:  genstudio export runs/<name> --to checkpoints/<name>  (after unpacking OUT_DIR/<name>.tar
# into runs/). Knobs (environment): DATA (folder with train.tar.gz and test.tar.gz; default
# $GENSTUDIO_DATA/cifar10), RUNS, T_EDM, T_ECT, T_LONG (seconds of training), CLF_EPOCHS, EXTRA (config
# overrides for every run, e.g. for a CPU dry run).
set -uo pipefail
OUT=${1:?usage: train_on_gpu.sh OUT_DIR}
DATA=${DATA:-${GENSTUDIO_DATA:?"set GENSTUDIO_DATA=/path/to/data (the folder holding cifar10/), or DATA=/path/to/cifar10"}/cifar10}
RUNS=${RUNS:-runs}
T_EDM=${T_EDM:-200}
T_ECT=${T_ECT:-130}
T_LONG=${T_LONG:-340}
CLF_EPOCHS=${CLF_EPOCHS:-80}
EXTRA=${EXTRA:-}
mkdir -p "$OUT" "$RUNS"
start=$(date +%s)
export PYTHONUNBUFFERED=1

# decode both archives once; every process then reads the shared cache
python -c "from genstudio.data import load_images as l; l('$DATA/train.tar.gz'); l('$DATA/test.tar.gz', split='test')" || exit 1

train() {  # train NAME SECONDS [overrides...]
  local name=$1 secs=$2
  shift 2
  # shellcheck disable=SC2086
  timeout -s TERM -k 90 "$secs" python -m genstudio.train --config "configs/$name.toml" \
    --data.source "$DATA/train.tar.gz" --train.output_dir "$RUNS/$name" $EXTRA "$@" > "$OUT/$name.log" 2>&1
  echo "[$name: exit $? at $(( $(date +%s) - start )) s]" >> "$OUT/$name.log"
}

timeout -s KILL 360 python -m genstudio.evaluation.train_classifier --train "$DATA/train.tar.gz" --test "$DATA/test.tar.gz" \
  --epochs "$CLF_EPOCHS" --time-budget 290 ${CLF_ARGS:-} --out "$OUT/classifier.safetensors" \
  > "$OUT/classifier.log" 2>&1 &
(train edm_small_cifar10 "$T_EDM"; train ect_cifar10 "$T_ECT" --train.init_from "$RUNS/edm_small_cifar10" --objective.options.double_every 300) &
train flow_small_cifar10 "$T_LONG" &
train ncsn_small_cifar10 "$T_LONG" &
wait
echo "all runs ended at $(( $(date +%s) - start )) s"

# fp16 weights (the trainer exports float32) and one tar per run, for transport
python - "$RUNS" "$OUT" <<'EOF'
import sys, tarfile
from pathlib import Path
from safetensors.torch import load_file, save_file
runs, out = Path(sys.argv[1]), Path(sys.argv[2])
for run in sorted(p for p in runs.iterdir() if (p / "model" / "genstudio.json").is_file()):
    for f in (run / "model").rglob("*.safetensors"):
        save_file({k: v.half() if v.is_floating_point() else v for k, v in load_file(str(f)).items()}, str(f),
                  metadata={"format": "pt"})
    with tarfile.open(out / f"{run.name}.tar", "w") as tar:
        for name in ("model", "metrics.jsonl", "config.json"):
            if (run / name).exists():
                tar.add(run / name, arcname=f"{run.name}/{name}")
    print(run.name, (out / f"{run.name}.tar").stat().st_size // 1024, "KiB")
EOF
tar -cf "$OUT/logs.tar" -C "$OUT" $(cd "$OUT" && ls *.log) && rm -f "$OUT"/*.log
ls -la "$OUT"
