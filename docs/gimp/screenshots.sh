#!/usr/bin/env bash
# Screenshots for docs/gimp.md: the Harmonize Layer dialog and its result in a real GIMP 3.2 GUI, headless.
# Needs root, the GIMP 3.2 chroot (FMM_GIMP_SUITE=forky bash .ci/gimp-chroot.sh) and this clone's .venv;
# installs Debian's xvfb, xdotool and imagemagick on the host. Usage: bash docs/gimp/screenshots.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
C=${1:-/var/cache/fmm/gimp-forky}
OUT=docs/gimp
W=$C/tmp/fmmshot
PY=.venv/bin/python
command -v Xvfb >/dev/null && command -v xdotool >/dev/null && command -v import >/dev/null \
    || apt-get install -y -qq xvfb xdotool imagemagick >/dev/null

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
in_chroot gimp-console-3.2 -i --quit                   # GIMP makes its profile in the home
printf '(show-welcome-dialog no)\n(show-tips no)\n' >> "$W/home/.config/GIMP/3.2/gimprc"
in_chroot gimp-console-3.2 -i --batch-interpreter=python-fu-eval -b "exec(open('/tmp/fmmshot/scene.py').read())" --quit
HOME=$W/home .venv/bin/harmonize gimp install --address /tmp/fmmshot/engine.sock
.venv/bin/harmonize serve --socket "$W/engine.sock" & server=$!

Xvfb :99 -screen 0 1280x800x24 -nolisten tcp & xvfb=$!  # GIMP's window comes out 1005x600 here
mountpoint -q "$C/tmp/.X11-unix" || mount --bind /tmp/.X11-unix "$C/tmp/.X11-unix"
cleanup() { kill "$gimp" "$server" "$xvfb" 2>/dev/null || true; umount "$C/tmp/.X11-unix" 2>/dev/null || true; }
trap cleanup EXIT
sleep 2
in_chroot DISPLAY=:99 NO_AT_BRIDGE=1 gimp-3.2 /tmp/fmmshot/scene.xcf >/tmp/fmmshot-gimp.log 2>&1 & gimp=$!
export DISPLAY=:99
wait_for() {  # wait_for NAME SECONDS: a window whose title matches NAME
    local i
    for ((i = 0; i < $2 * 2; i++)); do xdotool search --name "$1" >/dev/null 2>&1 && return 0; sleep 0.5; done
    echo "screenshots: no window '$1' after $2 s" >&2; import -window root /tmp/fmmshot-timeout.png; return 1
}
wait_for "scene" 120
sleep 8
main=$(xdotool search --name "scene" | head -1)
# Positions in GIMP 3.2's default single-window layout on this screen: the layer in the Layers dock, then
# the Filters menu, whose last item is Harmonize Layer (Up from the menu's top selects it).
xdotool mousemove 933 480 click 1
sleep 2
import -window "$main" -quality 88 "$OUT/before.jpg"
xdotool mousemove 400 10 click 1
sleep 2
xdotool key Up Return
wait_for "Harmonize Layer" 30
sleep 3
import -window "$(xdotool search --name 'Harmonize Layer' | head -1)" "$OUT/dialog.png"
xdotool mousemove 339 186 click 1              # OK (the dialog sits at the screen's corner: no window manager)
sleep 15
import -window "$main" -quality 88 "$OUT/result.jpg"
echo "screenshots: wrote $OUT/before.jpg, $OUT/dialog.png and $OUT/result.jpg"
