#!/usr/bin/env bash
# Continue the studio's default model on a GPU for a time budget, export it with fp16 weights and its compact
# optimizer state, re-score it under the protocols recorded on its card (c10 FID, the card's n and NFEs), and
# leave under OUT only what must come back (each file <= 16 MiB, all <= 64 MiB):
#
#   OUT/<name>/        the continued checkpoint: genstudio.json (lineage + 1 segment), unet/ (fp16), optimizer/
#                      (AdamW moments, bf16), samples.png, metrics.json (the new scores), fid_vs_nfe.png
#   OUT/summary.json   FID before and after per protocol, images seen before and after, the phases' seconds
#   OUT/logs.tar.gz    the training and scoring logs
#
#   bash bench/gpu_continue.sh OUT                      (from the repository root; about BUDGET seconds)
#
# Commit OUT/<name> (without optimizer/) over checkpoints/<name> only if summary.json says "better": true.
# Knobs (environment): BUDGET (seconds for the whole script, default 540), RESERVE (of those, kept for start-up,
# export and scoring; default 200), CKPT (default: checkpoints/$(cat checkpoints/DEFAULT)), DATA (folder with
# train.tar.gz; default $GENSTUDIO_DATA/cifar10), REFERENCE (the scoring reference; default
# $DATA/train.tar.gz: its content hash must be the recorded one), N (samples per score; default each record's
# own), EVAL_OPTS (JSON of further evaluator options, e.g. '{"batch_size": 1000}'), EXTRA (trainer overrides,
# e.g. "--train.batch_size 512 --train.lr 8e-4"), RUNS (the run folder's parent; default a temporary folder).
set -uo pipefail
OUT=${1:?usage: gpu_continue.sh OUT_DIR}
BUDGET=${BUDGET:-540}
RESERVE=${RESERVE:-200}
CKPT=${CKPT:-checkpoints/$(cat checkpoints/DEFAULT)}
DATA=${DATA:-${GENSTUDIO_DATA:?"set GENSTUDIO_DATA=/path/to/data (the folder holding cifar10/), or DATA=/path/to/cifar10"}/cifar10}
REFERENCE=${REFERENCE:-$DATA/train.tar.gz}
N=${N:-}
EVAL_OPTS=${EVAL_OPTS:-"{}"}
EXTRA=${EXTRA:-}
RUNS=${RUNS:-$(mktemp -d)}
NAME=$(basename "$CKPT")
TRAIN_S=$(( BUDGET - RESERVE ))
if (( TRAIN_S < 1 )); then echo "BUDGET ($BUDGET s) must exceed RESERVE ($RESERVE s)" >&2; exit 2; fi
mkdir -p "$OUT" "$RUNS"
LOGS=$(mktemp -d)
start=$(date +%s)
export PYTHONUNBUFFERED=1

# 1. train: stopped by wall time (SIGTERM: the trainer checkpoints, exports model/ and exits with status 3;
#    --preserve-status: timeout passes that status on, where it would say 124)
# shellcheck disable=SC2086
timeout --preserve-status -s TERM -k 60 "$TRAIN_S" python -m genstudio.train --continue "$CKPT" --data.source "$DATA/train.tar.gz" \
  --train.output_dir "$RUNS/$NAME" --train.progress false $EXTRA > "$LOGS/train.log" 2>&1
status=$?
trained=$(date +%s)
echo "[train: exit $status after $(( trained - start )) s]" | tee -a "$LOGS/train.log"
if [[ $status != 0 && $status != 3 ]] || [[ ! -f "$RUNS/$NAME/model/genstudio.json" ]]; then
  tail -20 "$LOGS/train.log" >&2; echo "training failed: nothing exported" >&2; exit 1
fi

# 2. export: fp16 weights and the compact optimizer state, with a fresh card
rm -rf "${OUT:?}/$NAME"
python -m genstudio.cli export "$RUNS/$NAME" --to "$OUT/$NAME" --fp16 --optimizer > "$LOGS/export.log" 2>&1 \
  || { cat "$LOGS/export.log" >&2; exit 1; }
exported=$(date +%s)

# 3. score under the card's protocols, and the summary
python - "$CKPT" "$OUT/$NAME" "$REFERENCE" "$N" "$EVAL_OPTS" "$OUT/summary.json" \
  "$(( trained - start ))" "$(( exported - trained ))" > "$LOGS/score.log" 2>&1 <<'EOF'
import json, sys, time
from pathlib import Path
from genstudio.evaluation.classifier import weights_hash
from genstudio.evaluation.records import measure, record_scores, redraw_plot

before, after, reference, n, opts, summary = sys.argv[1:7]
t0 = time.time()
card = json.loads((Path(before) / "metrics.json").read_text())
scored = [r for r in card.get("scores", []) if (r["protocol"].get("extractor") or {}).get("kind") == "c10"
          and "fid" in r["metrics"]]
records = [r for r in scored if not r.get("quick")] or scored  # the standard records, else the quick ones
current = weights_hash(json.loads(opts).get("classifier"))
rows = []
for r in records:
    p = {**r["protocol"], **({"n": int(n)} if n else {})}
    result = measure(after, p, reference=reference, progress=False, **json.loads(opts))
    record_scores(after, [result])
    q = result["protocol"]
    same = all(q[a][b] == r["protocol"][a][b] if b else q[a] == r["protocol"][a] for a, b in
               (("n", None), ("extractor", "weights_sha256"), ("reference", "content_hash"), ("reference", "n")))
    rows.append({"sampler": q["sampler"], "steps": q["steps"], "nfe": q["nfe"], "n": q["n"], "precision": q["precision"],
                 "fid_before": r["metrics"]["fid"], "fid_after": result["metrics"]["fid"],
                 "is_before": r["metrics"].get("is_mean"), "is_after": result["metrics"].get("is_mean"),
                 "same_protocol": same})
    print(f"{q['sampler']} {q['steps']} steps, n {q['n']}: FID {r['metrics']['fid']:.4g} -> {result['metrics']['fid']:.4g}"
          + ("" if same else " (NOT the same protocol: other n, classifier or reference)"))
if rows:
    redraw_plot(after, current)
old = json.loads((Path(before) / "genstudio.json").read_text()).get("training", {})
new = json.loads((Path(after) / "genstudio.json").read_text())["training"]
comparable = [x for x in rows if x["same_protocol"]]
out = {"checkpoint": Path(before).name, "images_seen_before": old.get("images_seen"),
       "images_seen_after": new["images_seen"], "segment": {k: v for k, v in new["lineage"][-1].items() if k != "config"},
       "scores": rows, "better": bool(comparable) and all(x["fid_after"] < x["fid_before"] for x in comparable),
       "seconds": {"train": int(sys.argv[7]), "export": int(sys.argv[8]), "score": round(time.time() - t0)}}
Path(summary).write_text(json.dumps(out, indent=2) + "\n")
print(json.dumps({k: v for k, v in out.items() if k != "segment"}, indent=2))
EOF
status=$?
cat "$LOGS/score.log"
tar -czf "$OUT/logs.tar.gz" -C "$LOGS" . && rm -rf "$LOGS"
[[ $status == 0 ]] || { echo "scoring failed (see logs.tar.gz)" >&2; exit 1; }

# 4. only what must come back: each file <= 16 MiB, all <= 64 MiB
python - "$OUT" <<'EOF'
import sys
from pathlib import Path
files = [p for p in Path(sys.argv[1]).rglob("*") if p.is_file()]
big = [f"{p} ({p.stat().st_size / 2**20:.1f} MiB)" for p in files if p.stat().st_size > 16 << 20]
total = sum(p.stat().st_size for p in files)
print(f"{len(files)} files, {total / 2**20:.1f} MiB in {sys.argv[1]}")
if big or total > 64 << 20:
    sys.exit(f"over the limits (16 MiB a file, 64 MiB in all): {', '.join(big) or f'{total / 2**20:.1f} MiB in all'}")
EOF
echo "done in $(( $(date +%s) - start )) s"
