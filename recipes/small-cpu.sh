#!/usr/bin/env bash
# fmm-small, the model that trains on 2 CPU cores (0.83 M parameters, working size 128; about four and a half
# hours): a base network, six fine-tunes averaged (a "model soup"), that soup fine-tuned three more times and
# averaged, in the Lab ensemble at weight 0.3. It shipped before fmm-medium; docs/results.md has its rounds.
#
#   pip install '.[train,export]' && bash recipes/small-cpu.sh [DATA] [RUNS]
set -euo pipefail
DATA=${1:-../shared/data}
RUNS=${2:-runs}
BASE=(--config small --data "$DATA")
TUNE=(--strong-edits --lr 5e-4 --steps 1200 --until 600 --restyle 0.5 --mild 0.2 --closeup 0.5)

harmonize train "${BASE[@]}" --out "$RUNS/small.pt" --steps 3500 --until 600
harmonize train "${BASE[@]}" --out "$RUNS/small.pt" --steps 2400 --until 1600 --resume  # schedule shortened
for seed in 4 5 6 7 8 9; do
    harmonize train "${BASE[@]}" --init "$RUNS/small.pt" "${TUNE[@]}" --seed $seed --out "$RUNS/ft-$seed.pt"
done
harmonize average "$RUNS"/ft-[4-9].pt --lab-mix 0.5 -o "$RUNS/soup.pt"
for seed in 4 5; do
    harmonize train "${BASE[@]}" --init "$RUNS/soup.pt" "${TUNE[@]}" --more-data --seed $seed --out "$RUNS/more-$seed.pt"
done
harmonize train "${BASE[@]}" --init "$RUNS/soup.pt" "${TUNE[@]}" --seed 4 --out "$RUNS/control-4.pt"
harmonize average "$RUNS"/more-[45].pt "$RUNS/control-4.pt" --lab-mix 0.3 -o "$RUNS/fmm-small.pt"
echo "to use it: harmonize export $RUNS/fmm-small.pt -o fmm-small.onnx, then --model fmm-small.onnx"
