#!/usr/bin/env bash
# The next GPU round (#26), prepared for a lent machine's 15 minutes: one call of under 10 minutes that trains
# the candidates side by side and writes what comes back to $OUT, to be scored here on the CPU by the rule in
# docs/results.md (the 32 real triples together, held-out synthetic composites as a proviso).
#
# Here first: bash recipes/gpu-round-5-carry.sh ../shared/data [WINNER.pt RUN-NAME]   (makes runs/data, runs/start)
# On the machine, with runs/data and runs/start carried:
#   bash recipes/gpu-round-5.sh runs/data runs/start "$OUT" [MINUTES]
#
# 1. `harmonize bench --synthesis` on the machine: composites per second, a sample at a time against drawn on
#    the CPU and made in batches on the GPU.
# 2. Four runs side by side: three fine-tunes of the shipped network, and the `wide` network (5.1 M parameters)
#    from scratch. They train their first minute with composites made in the loader's workers (--render
#    loader), then go on, resumed, with composites made on the GPU (--render device): each run's log says its
#    steps per second both ways, on the same machine in the same call. The paper's size (11.6 M) is not
#    tried: its weights (23 MiB in float16) can neither come back in one file nor be carried beside the
#    repository into the next round.
# A run whose checkpoint is in START (a previous round's, slimmed) resumes it: its budget is what it spent plus
# MINUTES, so rounds add up. Back in $OUT: each run's weights (float32, float16 for `wide`) and one log.
set -euo pipefail
DATA=${1:?the training pictures}
START=${2:?the folder of checkpoints to go on from}
OUT=${3:?where the checkpoints go}
MINUTES=${4:-6.5}  # the second phase's share; the call takes about MINUTES + 2
DEVICE=${DEVICE:-cuda}  # DEVICE=cpu for a dry run of the whole call here
PYTHON=${PYTHON:-python3}  # the machine's python3 holds torch, numpy and Pillow; the package is not installed there
if ! command -v harmonize >/dev/null; then
    harmonize() { "$PYTHON" -c 'import sys; from engine.cli import main; sys.exit(main(sys.argv[1:]))' "$@"; }
fi
COMMON=(--data "$DATA" --more-data --strong-edits --restyle 0.5 --mild 0.2 --closeup 0.5 --same-category 0.5
        --transfers reinhard,histogram,idt --device "$DEVICE" --workers 3 --batch-size 16 --steps 10000000
        --save-every 100 --resume)
FINE_TUNE=(--config medium --init engine/weights/fmm-medium.pt --lr 3e-4)
declare -A ARGS=(
    [medium-transfers-1]="${FINE_TUNE[*]} --seed 31"
    [medium-transfers-2]="${FINE_TUNE[*]} --seed 32"
    [medium-transfers-psnr]="${FINE_TUNE[*]} --loss psnr --seed 33"
    [wide-synthetic]="--config wide --lr 1e-3 --seed 34"
)
mkdir -p "$OUT/runs"

declare -A TOTAL
for name in "${!ARGS[@]}"; do  # each run's budget: what the checkpoint it goes on from spent, plus MINUTES
    if [ -e "$START/$name.pt" ]; then cp "$START/$name.pt" "$OUT/runs/$name.pt"; fi
    TOTAL[$name]=$("$PYTHON" -c 'import sys, torch; from pathlib import Path; p = Path(sys.argv[1])
spent = torch.load(p, weights_only=True).get("elapsed", 0) / 60 if p.exists() else 0
print(round(spent + float(sys.argv[2]), 2))' "$OUT/runs/$name.pt" "$MINUTES")
done
train() {  # train NAME RENDER [ARGS...]: one run, its log appended to NAME.log
    local name=$1 render=$2; shift 2
    # shellcheck disable=SC2086  # ARGS holds words
    harmonize train "${COMMON[@]}" ${ARGS[$name]} --render "$render" --minutes "${TOTAL[$name]}" "$@" \
        --out "$OUT/runs/$name.pt" >>"$OUT/runs/$name.log" 2>&1
}

harmonize bench --synthesis "$DATA" --device "$DEVICE" >"$OUT/runs/synthesis.log" 2>&1 || true
for name in "${!ARGS[@]}"; do train "$name" loader --pause-after 1 & done
wait
for name in "${!ARGS[@]}"; do train "$name" device & done
wait

"$PYTHON" - "$OUT" <<'EOF'
import sys
from pathlib import Path

from engine.training.train import slim_checkpoint

out = Path(sys.argv[1])
for ckpt in sorted((out / "runs").glob("*.pt")):
    slim_checkpoint(ckpt, out / ckpt.name, half=ckpt.stem.startswith("wide"))
logs = [f"== {log.name}\n{log.read_text(errors='replace')}" for log in sorted((out / "runs").glob("*.log"))]
(out / "round-5.log").write_text("\n".join(logs))
EOF
rm -rf "$OUT/runs"
ls -la "$OUT"
grep -h "steps in\|samples" "$OUT/round-5.log" || true
