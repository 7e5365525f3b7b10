#!/usr/bin/env bash
# The paper's recipe: the `paper` configuration (11.6 M parameters, image head) on iHarmony4's training lists,
# whole-image MSE, Adadelta, batch 24, on a GPU. iHarmony4 is not part of this project; give its root.
#
#   pip install '.[train,export]' && bash recipes/paper-iharmony4.sh /data/iHarmony4 [RUNS]
set -euo pipefail
ROOT=${1:?give the iHarmony4 root}
RUNS=${2:-runs}
harmonize train --config paper --iharmony4 "$ROOT" --batch-size 24 --optimizer adadelta --lr 1.0 --loss mse \
    --device cuda --steps 200000 --out "$RUNS/paper.pt"
