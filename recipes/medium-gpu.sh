#!/usr/bin/env bash
# The shipped model, fmm-medium: the `medium` configuration (3.28 M parameters, working size 256) trained on
# synthetic composites from the permissive pictures of the training data. One CUDA GPU and about 16 CPU
# cores: about 10 minutes of training (the data loader, not the GPU, sets the pace). docs/training.md says
# what each option does; docs/results.md how this recipe was chosen.
#
#   pip install '.[train,export]' && bash recipes/medium-gpu.sh [DATA] [RUNS]
set -euo pipefail
DATA=${1:-../shared/data}
RUNS=${2:-runs}
COMMON=(--config medium --data "$DATA" --more-data --strong-edits --restyle 0.5 --mild 0.2 --closeup 0.5
        --same-category 0.5 --device cuda --workers 5 --batch-size 16 --steps 10000000
        --render loader)  # as the shipped runs made their composites; --render device feeds a GPU faster

harmonize train "${COMMON[@]}" --minutes 6.5 --lr 1e-3 --seed 12 --out "$RUNS/medium.pt"
for seed in 20 21 22; do  # three fine-tunes side by side, as the shipped ones ran
    harmonize train "${COMMON[@]}" --minutes 3.5 --init "$RUNS/medium.pt" --lr 3e-4 --seed $seed \
        --out "$RUNS/mft-$seed.pt" &
done
wait
harmonize average "$RUNS"/mft-2[012].pt --lab-mix 0.3 -o "$RUNS/fmm-medium.pt"
echo "to ship it: harmonize export --shipped $RUNS/fmm-medium.pt"
