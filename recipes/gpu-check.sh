#!/usr/bin/env bash
# #32's GPU figures, for a lent GPU: one call of under 5 minutes. What each --device takes here, `harmonize run
# --device gpu` over 12 MP JPEGs beside the one-thread decode-map-encode loop, every backend's latency on the
# device, and tests/test_gpu.py; everything goes to OUT/gpu-check.log, to be copied into docs/results/.
#
# Here first (../shared does not travel; the benchmark's 22 triples fit beside the tracked files, validation's
# do not):  mkdir -p runs/shared/bench && cp -r ../shared/bench/iharmony4-samples runs/shared/bench/
# On the machine, with runs/shared carried (runs/data, left there by round 6's call, serves as the data):
#                  bash recipes/gpu-check.sh "$OUT"
# Dry run here:    DEVICE=cpu COUNT=2 bash recipes/gpu-check.sh /tmp/gpu-check
set -uo pipefail  # not -e: a failing step is logged and the next still runs
export PYTHONUNBUFFERED=1  # a step stopped by its time limit still leaves what it printed
if [ -d runs/shared ]; then
    [ -d runs/data ] && [ ! -e runs/shared/data ] && ln -s ../data runs/shared/data
    export FMM_SHARED=$PWD/runs/shared  # tests/conftest.py reads the bench triples and the photos there
fi
OUT=${1:?where the log goes}
DEVICE=${DEVICE:-gpu}  # DEVICE=cpu for a dry run of the whole call here
COUNT=${COUNT:-10}  # 12 MP pictures per throughput run (each of three repeats, for both runs)
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
# each step its own limit, together under 5 minutes: one that hangs costs its own figures only
step timeout -k 5 20 "${HARMONIZE[@]}" doctor
step timeout -k 5 110 "${HARMONIZE[@]}" bench --throughput --device "$DEVICE" --count "$COUNT"
step timeout -k 5 45 "${HARMONIZE[@]}" bench --device "$DEVICE" --sizes 256,1024 --repeat 3
if [ "$DEVICE" != cpu ]; then  # the Triton kernels against PyTorch (tests/test_gpu.py's first test) on their own
    env -u TRITON_INTERPRET timeout -k 5 50 "${HARMONIZE[@]}" gpu-check --repeat 5 >>"$LOG" 2>&1
    echo "== gpu-check: exit $?" >>"$LOG"
fi
step timeout -k 5 90 "$PYTHON" -m pytest -q -rs -p no:cacheprovider tests/test_gpu.py -k "not gpu_check"
grep -h "^== \|^| \|ratio\|model loaded\|takes\|passed\|failed\|skipped\|SKIPPED\|backend:" "$LOG"
