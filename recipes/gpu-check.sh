#!/usr/bin/env bash
# #32's GPU figures, for a lent GPU: one call of under 5 minutes. What each --device takes here, `harmonize run
# --device gpu` over 12 MP JPEGs beside the one-thread decode-map-encode loop, every backend's latency on the
# device, and tests/test_gpu.py; everything goes to OUT/gpu-check.log, to be copied into docs/results/.
#
# On the machine:  bash recipes/gpu-check.sh "$OUT"
# Dry run here:    DEVICE=cpu COUNT=2 bash recipes/gpu-check.sh /tmp/gpu-check
set -uo pipefail  # not -e: a failing step is logged and the next still runs
OUT=${1:?where the log goes}
DEVICE=${DEVICE:-gpu}  # DEVICE=cpu for a dry run of the whole call here
COUNT=${COUNT:-20}  # 12 MP pictures per throughput run (each of three repeats, for both runs)
PYTHON=${PYTHON:-python3}  # the machine's python3 holds torch, numpy and Pillow; the package is not installed there
HARMONIZE=(harmonize)  # an array, so that `timeout` can run it
if ! command -v harmonize >/dev/null; then
    HARMONIZE=("$PYTHON" -c 'import sys; from engine.cli import main; sys.exit(main(sys.argv[1:]))')
fi
mkdir -p "$OUT"
LOG="$OUT/gpu-check.log"
step() {  # a titled step, its output and its exit status, in the log
    echo "== $*" >>"$LOG"
    "$@" >>"$LOG" 2>&1
    echo "== exit $?" >>"$LOG"
}
{ date -u; nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"; nproc; } >"$LOG" 2>&1
step "${HARMONIZE[@]}" doctor
step timeout 170 "${HARMONIZE[@]}" bench --throughput --device "$DEVICE" --count "$COUNT"
step timeout 50 "${HARMONIZE[@]}" bench --device "$DEVICE" --sizes 256,1024 --repeat 3
step timeout 60 "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_gpu.py
grep -h "^== \|^| \|ratio\|takes\|passed\|failed\|skipped" "$LOG"
