#!/usr/bin/env bash
# GIMP 3.0 from Debian trixie in a debootstrap chroot, for tests/test_gimp_real.py. Idempotent: an
# existing, complete chroot is reused. Needs root. Usage: bash .ci/gimp-chroot.sh [DIR]
set -euo pipefail
C=${1:-${FMM_GIMP_CHROOT:-/var/cache/fmm/gimp-chroot}}
ready="$C/usr/lib/x86_64-linux-gnu/girepository-1.0/cairo-1.0.typelib"

if [ ! -x "$C/usr/bin/gimp-console-3.0" ] || [ ! -e "$ready" ]; then
    command -v debootstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null; }
    for m in proc dev; do mountpoint -q "$C.part/$m" 2>/dev/null && umount "$C.part/$m"; done
    rm -rf "$C.part"
    mkdir -p "$(dirname "$C")"
    echo "gimp-chroot: debootstrap trixie with GIMP 3 into $C (a few minutes)"
    debootstrap --variant=minbase --include=gimp,python3-gi,gir1.2-gimp-3.0 \
        trixie "$C.part" http://deb.debian.org/debian >"$C.log" 2>&1 || { tail -20 "$C.log"; exit 1; }
    cp /etc/resolv.conf "$C.part/etc/resolv.conf"
    # debootstrap's resolver leaves some dependencies half-configured; apt finishes the job.
    chroot "$C.part" apt-get update -qq
    chroot "$C.part" apt-get -f install -y -qq >>"$C.log" 2>&1
    chroot "$C.part" apt-get install -y -qq --no-install-recommends gir1.2-freedesktop python3-gi-cairo >>"$C.log" 2>&1
    chroot "$C.part" apt-get clean
    rm -rf "$C"
    mv "$C.part" "$C"
fi
mountpoint -q "$C/proc" || mount --bind /proc "$C/proc"
mountpoint -q "$C/dev" || mount --bind /dev "$C/dev"
chroot "$C" gimp-console-3.0 --version
