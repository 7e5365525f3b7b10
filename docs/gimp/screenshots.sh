#!/usr/bin/env bash
# Screenshots for docs/gimp.md: the Harmonize Layer dialog and its result in a real GIMP 3.2 GUI, headless.
# Needs root, the GIMP 3.2 chroot (FMM_GIMP_SUITE=forky bash .ci/gimp-chroot.sh) and this clone's .venv;
# installs Debian's xvfb, xdotool, imagemagick and openbox (a window manager, for the title bars) on the
# host. Usage: bash docs/gimp/screenshots.sh [CHROOT [OUT]] (another chroot, e.g. GIMP 3.0's, to see the
# dialog there; OUT defaults to docs/gimp). It fails when GIMP logs a control without a mnemonic.
set -euo pipefail
cd "$(dirname "$0")/../.."
C=${1:-/var/cache/fmm/gimp-forky}
OUT=${2:-docs/gimp}
V=$(basename "$(ls "$C"/usr/bin/gimp-console-3.* | tail -1)") && V=${V#gimp-console-}  # 3.2, or 3.0
W=$C/tmp/fmmshot
PY=.venv/bin/python
for tool in Xvfb xdotool import openbox; do
    command -v $tool >/dev/null || { apt-get install -y -qq --no-install-recommends xvfb xdotool imagemagick \
        openbox >/dev/null; break; }
done

rm -rf "$W" && mkdir -p "$W/home" "$C/tmp/.X11-unix"
# The scene: the bus example's photo with its recoloured bus pasted as a layer (alpha = its mask).
$PY - "$W" <<'PYEOF'
import sys
import numpy as np
from PIL import Image
w = sys.argv[1]
comp, mask = Image.open("examples/composites/bus.jpg"), Image.open("examples/masks/bus.png")
x0, y0, x1, y1 = mask.getbbox()
Image.open("examples/originals/bus.jpg").save(f"{w}/photo.jpg", quality=95)
rgba = np.dstack([np.asarray(comp), np.asarray(mask)])[y0:y1, x0:x1]
Image.fromarray(rgba, "RGBA").save(f"{w}/object.png")
open(f"{w}/offsets.txt", "w").write(f"{x0} {y0}")
PYEOF
cp docs/gimp/scene.py "$W/scene.py"
in_chroot() { chroot "$C" env HOME=/tmp/fmmshot/home FMM_WORK=/tmp/fmmshot "$@"; }
in_chroot gimp-console-$V -i --quit                   # GIMP makes its profile in the home
printf '(show-welcome-dialog no)\n(show-tips no)\n' >> "$W/home/.config/GIMP/$V/gimprc"
in_chroot gimp-console-$V -i --batch-interpreter=python-fu-eval -b "exec(open('/tmp/fmmshot/scene.py').read())" --quit
HOME=$W/home .venv/bin/harmonize gimp install --address /tmp/fmmshot/engine.sock
.venv/bin/harmonize serve --socket "$W/engine.sock" & server=$!

Xvfb :99 -screen 0 1440x900x24 -nolisten tcp & xvfb=$!
export DISPLAY=:99
mountpoint -q "$C/tmp/.X11-unix" || mount --bind /tmp/.X11-unix "$C/tmp/.X11-unix"
cleanup() { kill "$gimp" "$wm" "$server" "$xvfb" 2>/dev/null || true; umount "$C/tmp/.X11-unix" 2>/dev/null || true; }
trap cleanup EXIT
sleep 2
openbox & wm=$!
in_chroot DISPLAY=:99 NO_AT_BRIDGE=1 gimp-$V /tmp/fmmshot/scene.xcf >/tmp/fmmshot-gimp.log 2>&1 & gimp=$!
wait_for() {  # wait_for NAME SECONDS: a window whose title matches NAME
    local i
    for ((i = 0; i < $2 * 2; i++)); do xdotool search --name "$1" >/dev/null 2>&1 && return 0; sleep 0.5; done
    echo "screenshots: no window '$1' after $2 s" >&2; import -window root /tmp/fmmshot-timeout.png; return 1
}
shot() { import -frame -window "$1" -quality 82 "$2"; }  # shot WINDOW FILE: with its title bar
wait_for "scene" 180
sleep 8
main=$(xdotool search --name "scene" | head -1)
xdotool windowactivate --sync "$main" windowsize --sync "$main" 1200 760
sleep 3
# Widen the docks (drag the handle left of them) so that the layer names show whole.
xdotool mousemove --window "$main" 942 391 mousedown 1
for x in 920 880 840 800 782; do xdotool mousemove --window "$main" "$x" 391; sleep 0.2; done
xdotool mouseup 1
sleep 2
xdotool key shift+ctrl+j                       # View > Zoom > Fit Image in Window, in the narrower canvas
sleep 2
shot "$main" "$OUT/before.jpg"
# The pasted layer is the selected one (scene.py). Filte_rs, then Harmoni_ze Layer...: the mnemonics
xdotool key alt+r
sleep 2
xdotool key z
wait_for "^Harmonize Layer$" 60
sleep 3
dialog=$(xdotool search --name '^Harmonize Layer$' | head -1)
xdotool keydown alt                            # GTK underlines the mnemonics while Alt is held
sleep 1
import -frame -window "$dialog" "$OUT/dialog.png"
xdotool keyup alt
xdotool key Return                             # OK, the dialog's default
wait_for "3 layers" 120                        # the title counts the image's layers
sleep 3
shot "$main" "$OUT/result.jpg"
if grep -i "mnemonic" /tmp/fmmshot-gimp.log; then echo "screenshots: GIMP found a control without a mnemonic" >&2; exit 1; fi
echo "screenshots: wrote $OUT/before.jpg, $OUT/dialog.png and $OUT/result.jpg"
