#!/usr/bin/env bash
# Here, before a GPU round (recipes/gpu-round-6.sh): make the ignored folders the call carries, as large as fit
# beside the repository's tracked files in the 64 MiB a call may send.
#   runs/start: the checkpoints round-6.json's candidates go on from ("from"), slimmed to float16 weights
#   runs/data:  the permissive pictures (coco/, coco-more/, coco-extra/, photos/) at the largest resolution and
#               JPEG quality that fit (short side 512, the resolution a 256 px run works from, down to 320)
#
#   bash recipes/gpu-round-6-carry.sh ../shared/data [CHECKPOINT...]
#   e.g. bash recipes/gpu-round-6-carry.sh ../shared/data ../shared/runs/round-5/r5b-medium-transfers-2.pt \
#            ../shared/runs/round-5/r5b-wide-synthetic.pt
set -euo pipefail
SHARED_DATA=${1:?the photos and masks (../shared/data)}
shift
PY=${PYTHON:-.venv/bin/python}
rm -rf runs/data runs/start
mkdir -p runs/start
for ckpt in "$@"; do
    "$PY" -c 'import sys; from engine.training.train import slim_checkpoint; slim_checkpoint(*sys.argv[1:], half=True)' \
        "$ckpt" "runs/start/$(basename "$ckpt")"
done
"$PY" - "$SHARED_DATA" <<'PYTHON'
import shutil
import subprocess
import sys
from pathlib import Path

from engine.training.synthetic import pack_sources

LIMIT = 63.5 * 2**20  # a call sends at most 64 MiB
# what travels besides the carried folders: tracked files and untracked ones git does not ignore
files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], capture_output=True,
                       text=True, check=True).stdout.split("\0")
tracked = sum(Path(p).stat().st_size for p in files if p and Path(p).is_file())
start = sum(f.stat().st_size for f in Path("runs/start").glob("*"))
# NOTE: resolution first, then quality: a view is 60 to 100 % of the short side, resampled to 256 px
for short, quality in ((512, 90), (512, 75), (448, 75), (384, 75), (384, 60), (352, 60), (320, 60), (320, 50),
                       (288, 50), (256, 60), (256, 50), (256, 40)):
    shutil.rmtree("runs/data", ignore_errors=True)
    data = pack_sources(sys.argv[1], "runs/data", 256, quality=quality, short=short)
    if tracked + start + data <= LIMIT:
        break
else:
    raise SystemExit("runs/data and runs/start do not fit in the 64 MiB a call may send: carry fewer checkpoints")
print(f"a call sends {(tracked + start + data) / 2**20:.1f} MiB: {tracked / 2**20:.1f} tracked, runs/start "
      f"{start / 2**20:.1f}, runs/data {data / 2**20:.1f} (short side {short}, JPEG {quality})")
PYTHON
