#!/usr/bin/env bash
# The next GPU round (#26), prepared for a lent machine's 15 minutes: one call of under 10 minutes that trains
# the candidates side by side and writes their checkpoints to $OUT, to be scored here on the CPU by the rule
# in docs/results.md (the 32 real triples together, held-out synthetic composites as a proviso).
#
# Carried to the machine (ignored folders): runs/data (the permissive pictures, photos/ scaled to 512 px on the
# short side) and runs/start (the shipped checkpoint, and any checkpoint a previous round returned, which
# each run resumes: rounds add up instead of starting over).
#
#   bash recipes/gpu-round-5.sh runs/data runs/start "$OUT" [MINUTES]
set -euo pipefail
DATA=${1:?the training pictures}
START=${2:?the folder of starting checkpoints}
OUT=${3:?where the checkpoints go}
MINUTES=${4:-8}
COMMON=(--data "$DATA" --more-data --strong-edits --restyle 0.5 --mild 0.2 --closeup 0.5 --same-category 0.5
        --device cuda --workers 3 --batch-size 16 --steps 10000000 --save-every 100)
mkdir -p "$OUT"
run() {  # run NAME ARGS...: resume NAME from a previous round when it came back, else start it
    local name=$1; shift
    if [ -e "$START/$name.pt" ]; then cp "$START/$name.pt" "$OUT/$name.pt"; fi
    harmonize train "${COMMON[@]}" "$@" --minutes "$MINUTES" --resume --out "$OUT/$name.pt" >"$OUT/$name.log" 2>&1
}
# The shipped network fine-tuned on all three of HCOCO's transfers, two seeds.
run medium-transfers-1 --config medium --init "$START/fmm-medium.pt" --transfers reinhard,histogram,idt --lr 3e-4 --seed 31 &
run medium-transfers-2 --config medium --init "$START/fmm-medium.pt" --transfers reinhard,histogram,idt --lr 3e-4 --seed 32 &
# The same with the foreground-weighted loss the shipped one used, but on the scale of mean PSNR.
run medium-transfers-psnr --config medium --init "$START/fmm-medium.pt" --transfers reinhard,histogram,idt --lr 3e-4 \
    --loss psnr --seed 33 &
# The paper's own size (11.6 M parameters) from scratch, on the same composites.
run paper-synthetic --config paper --transfers reinhard,histogram,idt --lr 1e-3 --seed 34 &
wait
ls -la "$OUT"
