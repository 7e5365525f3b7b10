#!/usr/bin/env bash
# Here, before a GPU round (recipes/gpu-round-5.sh): make the ignored folders the call carries, as large as fit
# beside the repository's tracked files in the 64 MiB a call may send.
#   runs/start: what a previous round returned that the next should go on from (one checkpoint fits: the
#               round's winner, slimmed to float16 weights), named as its run
#   runs/data:  the permissive pictures at the resolution a 256 px run works from (short side 512), as JPEGs
#               of the best quality that fits (90 with no checkpoint to carry; 75 beside the `wide` network)
#
#   bash recipes/gpu-round-5-carry.sh ../shared/data [WINNER.pt RUN-NAME]
set -euo pipefail
SHARED_DATA=${1:?the photos and masks (../shared/data)}
PY=${PYTHON:-.venv/bin/python}
rm -rf runs/data runs/start
mkdir -p runs/start
if [ $# -ge 3 ]; then
    "$PY" -c 'import sys; from engine.training.train import slim_checkpoint; slim_checkpoint(*sys.argv[1:], half=True)' \
        "$2" "runs/start/$3.pt"
fi
"$PY" - "$SHARED_DATA" <<'EOF'
import shutil
import subprocess
import sys
from pathlib import Path

from engine.training.synthetic import pack_sources

LIMIT = 63.5 * 2**20  # a call sends at most 64 MiB
files = subprocess.run(["git", "ls-files", "-z"], capture_output=True, text=True, check=True).stdout.split("\0")
tracked = sum(Path(p).stat().st_size for p in files if p)
start = sum(f.stat().st_size for f in Path("runs/start").glob("*"))
for quality in (90, 85, 80, 75):
    shutil.rmtree("runs/data", ignore_errors=True)
    data = pack_sources(sys.argv[1], "runs/data", 256, quality=quality)
    if tracked + start + data <= LIMIT:
        break
else:
    raise SystemExit("runs/data and runs/start do not fit in the 64 MiB a call may send: carry a smaller checkpoint")
print(f"a call sends {(tracked + start + data) / 2**20:.1f} MiB: {tracked / 2**20:.1f} tracked, runs/start "
      f"{start / 2**20:.1f}, runs/data {data / 2**20:.1f} (JPEG {quality})")
EOF
