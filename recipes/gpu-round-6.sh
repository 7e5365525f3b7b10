#!/usr/bin/env bash
# Round 6 (#30), for a lent GPU: one call of under 9 minutes that measures the trainer and trains the candidates
# of recipes/round-6.json one after another in one process, composites drawn and made on the GPU from pictures
# decoded once (--render resident); what comes back in $OUT is scored here on the CPU by the rule of
# docs/results.md (harmonize choose).
#
# Here first: bash recipes/gpu-round-6-carry.sh ../shared/data START.pt...   (makes runs/data, runs/start)
# On the machine, with runs/data and runs/start carried:
#   bash recipes/gpu-round-6.sh runs/data runs/start "$OUT" [MINUTES]
#
# 1. `harmonize bench --train` on the machine: samples per second and the share of a step spent waiting for
#    composites, in fp32, bf16, bf16 channels-last and bf16 made ahead in a thread (the round trains in bf16,
#    --precision auto, channels-last and made ahead where each measured faster), into $OUT/bench-train.json.
# 2. `harmonize train-round`: each candidate its share of MINUTES.
# Back in $OUT (at most 8 files of at most 16 MiB): each candidate's float16 weights (the paper's size in two
# parts: cat paper-affine.pt.part* > paper-affine.pt), bench-train.json and round-6.log.
set -euo pipefail
DATA=${1:?the training pictures}
START=${2:?the folder of checkpoints to go on from}
OUT=${3:?where the checkpoints go}
MINUTES=${4:-5}  # the candidates' training time together; the call takes about MINUTES + 1.5
DEVICE=${DEVICE:-cuda}  # DEVICE=cpu for a dry run of the whole call here
BATCH=${BATCH:-}  # in place of the round's batch size: BATCH=4 for a dry run on the CPU
PYTHON=${PYTHON:-python3}  # the machine's python3 holds torch, numpy and Pillow; the package is not installed there
ROUND=${ROUND:-recipes/round-6.json}  # the candidates
# the full checkpoints, out of $OUT (only files under 16 MiB come back); a candidate whose checkpoint is there goes
# on from it, its MINUTES counted in total: a dry run here gives RUNS=$(mktemp -d), or it goes on from the last
RUNS=${RUNS:-/tmp/round-6-runs}
export PYTHONUNBUFFERED=1  # a call stopped by its time limit still leaves the log of what was done
if ! command -v harmonize >/dev/null; then
    harmonize() { "$PYTHON" -c 'import sys; from engine.cli import main; sys.exit(main(sys.argv[1:]))' "$@"; }
fi
mkdir -p "$OUT"
LOG="$OUT/round-6.log"
{ date -u; nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"; "$PYTHON" -c 'import torch; print("torch", torch.__version__)'; } \
    >"$LOG" 2>&1
harmonize bench --train "$DATA" --device "$DEVICE" ${BATCH:+--train-batch "$BATCH"} --json >"$OUT/bench-train.json" \
    2>>"$LOG" || echo "bench --train failed" >>"$LOG"
# the candidates train in the layout, and with their composites made ahead or not, as the bench just measured
# faster on this machine (engine/evaluation/bench.py's train_flags decides; its table goes into the log)
LAYOUT=$("$PYTHON" -c 'import json, sys
from engine.evaluation.bench import train_table
result = json.load(open(sys.argv[1]))
print(train_table(result), file=sys.stderr)
print(*result["flags"])' "$OUT/bench-train.json" 2>>"$LOG") || LAYOUT=""
harmonize train-round "$ROUND" --data "$DATA" --start "$START" --out "$OUT" --runs "$RUNS" --minutes "$MINUTES" \
    --device "$DEVICE" ${BATCH:+--batch-size "$BATCH"} $LAYOUT >>"$LOG" 2>&1 && status=0 || status=$?
ls -la "$OUT"
grep -h "samples/s\|round:\|faster here:\|Error" "$LOG" || true
exit "$status"  # the candidates that trained came back even when one failed (the log says which)
