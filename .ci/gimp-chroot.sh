#!/usr/bin/env bash
# GIMP 3 from Debian in a debootstrap chroot, for tests/test_gimp_real.py. Idempotent: an existing,
# complete chroot is reused. Needs root.
#
#   bash .ci/gimp-chroot.sh [DIR]                         # GIMP 3.0 (Debian trixie)
#   FMM_GIMP_SUITE=forky bash .ci/gimp-chroot.sh [DIR]    # GIMP 3.2 (Debian forky)
#
# DIR defaults to /var/cache/fmm/gimp-<suite>. debootstrap only lays a minimal system; GIMP is installed by
# apt inside it, because debootstrap's own resolver does not follow alternatives (dconf-service wants
# default-dbus-session-bus | dbus-session-bus). A suite this host's debootstrap has no script for (forky on
# Debian 12) is laid with the sid script, and a testing suite's Release may be past its Valid-Until date, so
# apt does not check it. Every network step is retried for a flaky mirror.
set -euo pipefail
SUITE=${FMM_GIMP_SUITE:-trixie}
C=${1:-/var/cache/fmm/gimp-$SUITE}
MIRROR=${FMM_DEBIAN_MIRROR:-http://deb.debian.org/debian}
PACKAGES="gimp python3-gi gir1.2-gimp-3.0 gir1.2-freedesktop python3-gi-cairo"
ready="usr/lib/x86_64-linux-gnu/girepository-1.0/cairo-1.0.typelib"
APT="apt-get -o Acquire::Check-Valid-Until=false -o Acquire::Retries=3"

retry() {  # retry N CMD...: run CMD up to N times, 10 s apart
    local n=$1 i; shift
    for ((i = 1; i <= n; i++)); do
        "$@" && return 0
        echo "gimp-chroot: try $i/$n failed: $*" >&2
        [ "$i" -lt "$n" ] && sleep 10
    done
    return 1
}

unmount_all() {  # unmount_all DIR: the bind mounts this script makes, if present
    local m
    for m in proc dev; do if mountpoint -q "$1/$m" 2>/dev/null; then umount "$1/$m"; fi; done
}

gimp_console() {  # gimp_console DIR: the chroot's gimp-console-3.x, or nothing
    compgen -G "$1/usr/bin/gimp-console-3.*" | head -1
}

if [ -z "$(gimp_console "$C")" ] || [ ! -e "$C/$ready" ]; then
    if ! command -v debootstrap >/dev/null; then
        retry 3 apt-get update -qq
        retry 3 apt-get install -y -qq debootstrap >/dev/null
    fi
    script=/usr/share/debootstrap/scripts/$SUITE
    [ -e "$script" ] || script=/usr/share/debootstrap/scripts/sid
    P="$C.part"
    unmount_all "$P"
    rm -rf "$P"
    mkdir -p "$(dirname "$C")"
    log="$C.log"
    : >"$log"
    echo "gimp-chroot: debootstrap $SUITE into $P, then apt install GIMP 3 (a few minutes; log: $log)"
    fresh() { unmount_all "$P"; rm -rf "$P"; debootstrap --variant=minbase "$SUITE" "$P" "$MIRROR" "$script" >>"$log" 2>&1; }
    retry 3 fresh || { tail -30 "$log"; exit 1; }
    cp /etc/resolv.conf "$P/etc/resolv.conf"
    mount --bind /proc "$P/proc"
    mount --bind /dev "$P/dev"
    trap 'unmount_all "$P"' EXIT
    in_chroot() { chroot "$P" env DEBIAN_FRONTEND=noninteractive "$@" >>"$log" 2>&1; }
    retry 3 in_chroot $APT update -q || { tail -30 "$log"; exit 1; }
    # The first try may stop half-way on a dropped download; 'apt-get -f install' then finishes it.
    install_gimp() { in_chroot $APT install -y -q --no-install-recommends $PACKAGES || in_chroot $APT -f install -y -q; }
    retry 3 install_gimp || { tail -30 "$log"; exit 1; }
    [ -n "$(gimp_console "$P")" ] && [ -e "$P/$ready" ] \
        || { tail -30 "$log"; echo "gimp-chroot: GIMP or the cairo typelib is missing after apt" >&2; exit 1; }
    in_chroot apt-get clean
    unmount_all "$P"
    trap - EXIT
    rm -rf "$C"
    mv "$P" "$C"
fi
mountpoint -q "$C/proc" || mount --bind /proc "$C/proc"
mountpoint -q "$C/dev" || mount --bind /dev "$C/dev"
console=$(gimp_console "$C")
chroot "$C" "${console#"$C"}" --version
