"""`harmonize gimp install|--check|--uninstall`: put the plug-in where GIMP 3 looks for it.

Every GIMP 3.x profile is found where each packaging keeps it (native, Flatpak, Snap, Windows, macOS);
a future 3.x needs no change here; the Snap is found only to say that it is not supported yet. The
plug-in goes into the newest profile of each packaging found, which is the one that GIMP reads
(`--all-profiles` also into older ones, for a GIMP kept beside a newer one). Its files are copied into
`<profile>/plug-ins/harmonize_layer/` (GIMP wants the folder named like the executable file), with an
`engine.json` that points it at this interpreter and an `engine.key` only this user may read. There is
one key for the engine's port: every installed profile holds the same one, and a reinstall keeps it (a
running engine then still knows it) unless a new one is asked for.
"""
from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import plugin
from plugin import client, protocol, rendezvous

from ..errors import InputError

NAME = "harmonize_layer"
FILES = ("harmonize_layer.py", "gimpfu_shim.py", "client.py", "protocol.py", "rendezvous.py")
PROFILE = re.compile(r"3\.(\d+)")
KEY_NAME = "engine.key"
# GIMP's own guide for the Snap: plug-ins come from a content snap connected to its gimp-plugins interface
# (developer.gimp.org, "How to package a plugin that will work on Snap"); files in its profile are not
# enough, and its confinement cannot run this engine's Python.
SNAP_UNSUPPORTED = ("the Snap GIMP is not supported yet: a Snap GIMP takes plug-ins only from snaps connected "
                    "to its gimp-plugins interface, and none is published for fmm-harmonize; use GIMP from your "
                    "distribution or from Flathub")


@dataclass(frozen=True)
class Profile:
    """One GIMP profile folder: `GIMP/3.x` as one packaging of GIMP keeps it."""

    path: Path
    version: tuple[int, int]
    packaging: str  # native, flatpak, snap, windows, macos, or given (a --gimp-dir elsewhere)

    @property
    def label(self) -> str:
        if self.packaging == "given":
            return f"the GIMP profile {self.path}"
        return f"GIMP {self.version[0]}.{self.version[1]} ({self.packaging})"


def profile_roots() -> list[tuple[str, Path]]:
    """(packaging, the folder holding its `3.x` profiles) for this platform, the usual one first."""
    home = Path.home()
    system = platform.system()
    if system == "Windows":
        return [("windows", Path(os.environ.get("APPDATA", home / "AppData" / "Roaming")) / "GIMP")]
    if system == "Darwin":
        return [("macos", home / "Library" / "Application Support" / "GIMP")]
    config = Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config")
    return [("native", config / "GIMP"),
            ("flatpak", home / ".var" / "app" / rendezvous.FLATPAK_APP / "config" / "GIMP"),
            ("snap", home / "snap" / "gimp" / "current" / ".config" / "GIMP")]


def find_profiles() -> list[Profile]:
    """Every GIMP 3.x profile on this machine, newest first (the usual packaging first within a version)."""
    found = []
    for order, (packaging, root) in enumerate(profile_roots()):
        for d in root.iterdir() if root.is_dir() else ():
            m = PROFILE.fullmatch(d.name)
            if m and d.is_dir():
                found.append((-int(m[1]), order, Profile(d, (3, int(m[1])), packaging)))
    return [p for *_, p in sorted(found, key=lambda t: t[:2])]


def targets(profiles: list[Profile], all_profiles: bool = False) -> list[Profile]:
    """The profiles to install into: the newest of each packaging (the one its GIMP reads), or all."""
    if all_profiles:
        return list(profiles)
    newest: dict[str, Profile] = {}
    for p in profiles:
        newest.setdefault(p.packaging, p)
    return [p for p in profiles if newest[p.packaging] is p]


def plugin_dir(profile_path: Path) -> Path:
    return Path(profile_path) / "plug-ins" / NAME


def engine_config(dest: Path, flatpak: bool, address: str | None = None) -> dict:
    """What the plug-in in `dest` needs to reach this engine."""
    from .. import __version__
    from .devices import devices

    config = {"python": sys.executable, "engine_path": str(Path(__file__).resolve().parents[2]),
              "version": __version__, "devices": list(devices()), "idle_minutes": client.IDLE_MINUTES,
              "key_file": str(dest / KEY_NAME)}
    if address:
        config["address"] = address
    elif flatpak:  # the sandbox does not share $XDG_RUNTIME_DIR: meet under the home folder
        config["address"] = rendezvous.flatpak_socket()
    return config


def install(profile_path: Path, address: str | None = None, flatpak: bool = False, python: str | None = None,
            key: str | None = None) -> Path:
    """Copy the plug-in and write its engine config and `key` (by default the engine's key, new if none
    is installed yet); returns the plug-in folder."""
    dest = plugin_dir(profile_path)
    dest.mkdir(parents=True, exist_ok=True)
    src = Path(plugin.__file__).parent
    for name in FILES:
        shutil.copyfile(src / name, dest / name)
    (dest / f"{NAME}.py").chmod(0o755)
    config = engine_config(dest, flatpak, address)
    if python:
        config["python"] = python
    rendezvous.write_key(config["key_file"], key or engine_key())
    (dest / client.CONFIG_NAME).write_text(json.dumps(config, indent=1) + "\n")
    return dest


def _key_files() -> list[str]:
    """The key files of the plug-ins installed in this machine's GIMP profiles, newest profile first."""
    found = []
    for profile in find_profiles():
        dest = plugin_dir(profile.path)
        key_file = client.read_config(dest).get("key_file") if (dest / client.CONFIG_NAME).exists() else None
        if key_file and Path(key_file).exists():
            found.append(key_file)
    return found


def installed_key() -> str | None:
    """The key file of the plug-in in the newest GIMP profile that has one installed."""
    return next(iter(_key_files()), None)


def engine_key() -> str:
    """The engine's one key: the installed plug-ins' (the newest profile's, if they differ), else a new one."""
    for key_file in _key_files():
        try:
            return rendezvous.read_key(key_file).decode()
        except (OSError, ValueError):
            continue
    return rendezvous.new_key()


def share_key(key: str) -> None:
    """Give every installed plug-in `key`, so that one engine port has one key whichever GIMP calls it."""
    for key_file in _key_files():
        rendezvous.write_key(key_file, key)


def uninstall(profile_path: Path) -> bool:
    """Remove the plug-in folder; False when it was not there."""
    dest = plugin_dir(profile_path)
    if not dest.exists():
        return False
    shutil.rmtree(dest)
    return True


def _files_current(dest: Path) -> str | None:
    """Why the copy in `dest` is not this package's plug-in, or None when it is."""
    src = Path(plugin.__file__).parent
    for name in FILES:
        f = dest / name
        if not f.exists():
            return f"{f.name} is missing"
        if f.read_bytes() != (src / name).read_bytes():
            return f"{f.name} is from another version of fmm-harmonize"
    if not os.access(dest / f"{NAME}.py", os.X_OK):
        return f"{NAME}.py is not executable"
    return None


def check_profile(profile_path: Path, read_by: str | None = None) -> list[tuple[str, str]]:
    """(status, message) lines for the plug-in in one profile: status "ok", "MISSING", "STALE" or
    "stale" (a copy in an older profile, which `read_by` names the newer one of)."""
    dest = plugin_dir(profile_path)
    fix = f"run: harmonize gimp install --gimp-dir {profile_path}"
    if read_by is not None:
        if not dest.exists():
            return []
        return [("stale", f"{dest}: an older profile; {read_by} reads its own instead. Kept for that older "
                          f"GIMP; remove with: harmonize gimp --uninstall --gimp-dir {profile_path}")]
    if not Path(profile_path).is_dir():
        return [("MISSING", f"GIMP 3 profile {profile_path} not found: is GIMP 3 installed and started once?")]
    if not dest.exists():
        return [("MISSING", f"plug-in not installed in {dest}; {fix}")]
    why = _files_current(dest)
    if why:
        return [("STALE", f"plug-in in {dest}: {why}; {fix}")]
    lines = [("ok", f"plug-in installed and current in {dest}")]
    try:
        config = client.read_config(dest)
    except client.EngineError as exc:
        return [*lines, ("MISSING", str(exc))]
    python = config.get("python")
    if not python:
        return [*lines, ("MISSING", f"no engine interpreter configured in {dest / client.CONFIG_NAME}; {fix}")]
    try:
        code = "import engine.runtime.backends, onnxruntime"  # as the plug-in starts it: -I, its own folder
        r = subprocess.run(rendezvous.isolated(python, code, config.get("engine_path")), capture_output=True,
                           text=True, cwd=os.path.dirname(python) or None)
        ok, why = r.returncode == 0, (r.stderr.strip().splitlines() or ["it failed"])[-1]
    except OSError as exc:
        ok, why = False, exc.strerror
    lines.append(("ok" if ok else "MISSING", f"engine interpreter {python}" + ("" if ok else
                  f" cannot import the engine ({why}); reinstall with the harmonize of the environment that "
                  f"should serve GIMP: harmonize gimp install")))
    return lines


def check_server(config: dict, flatpak: bool = False) -> tuple[str, str]:
    """Whether an engine server answers where the plug-in would look; a Flatpak GIMP cannot start one,
    so there the user is told what to run ("todo"); where what is there is not safe to use (a socket folder
    others may change, something else answering, a refused key) the plug-in would fail: "UNSAFE"."""
    try:
        header = client.ping(config)
        return "ok", (f"engine server running (pid {header.get('pid')}, {header.get('backend')} on "
                      f"{header.get('device')}, version {header.get('version')})")
    except client.OtherVersion as exc:
        return "stale", f"at {client.address_of(config)}, {exc}; the next Harmonize Layer call replaces it, or says how"
    except client.EngineError as exc:
        return "UNSAFE", f"the plug-in would not use the engine at {client.address_of(config)}: {exc}"
    except (OSError, protocol.ProtocolError):
        if flatpak:
            return "todo", "no engine server running. " + client.flatpak_message(config, client.address_of(config))
        return "ok", ("no engine server running: the first Harmonize Layer call starts one, and it stops "
                      f"after {config.get('idle_minutes', client.IDLE_MINUTES)} idle minutes")


def given_profile(gimp_dir: str) -> Profile:
    """The profile `--gimp-dir` names, with its packaging when it lies where one keeps its profiles (a
    Flatpak profile needs the socket both sides see, whichever way it was named)."""
    path = Path(gimp_dir).expanduser().absolute()
    m = PROFILE.fullmatch(path.name)
    for packaging, root in profile_roots():
        if m and path.parent == root.absolute():
            return Profile(path, (3, int(m[1])), packaging)
    return Profile(path, (3, int(m[1])) if m else (3, 0), "given")


def _refuse_unread(path: Path, create: bool) -> None:
    """Refuse a --gimp-dir that GIMP would never read: one that does not exist (a typo, most often; made
    only with --create), or the folder that holds the profiles rather than one of them."""
    if not path.exists():
        if create:
            return
        found = ", ".join(str(p.path) for p in find_profiles()) or "none"
        raise InputError(f"--gimp-dir {path} does not exist (GIMP 3 profiles found on this machine: {found}). "
                         "GIMP makes its profile when it first starts, and Edit > Preferences > Folders names "
                         "it; give an existing one, or add --create to make this one")
    if not path.is_dir():
        raise InputError(f"--gimp-dir {path} is a file, not a GIMP profile folder")
    inner = sorted(d.name for d in path.iterdir() if PROFILE.fullmatch(d.name) and d.is_dir())
    if inner and not PROFILE.fullmatch(path.name):
        raise InputError(f"--gimp-dir {path} holds GIMP profiles ({', '.join(inner)}) but is not one: give one of "
                         f"them, such as --gimp-dir {path / inner[-1]}")


def main(action: str, gimp_dir: str | None, address: str | None = None, all_profiles: bool = False,
         create: bool = False, new_key: bool = False) -> int:
    """The CLI's entry: prints what it did; the exit status follows --check's verdict."""
    profiles = find_profiles()
    chosen = [given_profile(gimp_dir)] if gimp_dir else targets(profiles, all_profiles)
    if action == "install":
        if gimp_dir:
            _refuse_unread(chosen[0].path, create)
        return _install(chosen, address, gimp_dir is not None, new_key)
    if action == "uninstall":
        if gimp_dir:
            _refuse_unread(chosen[0].path, create=False)
        return _uninstall(chosen if gimp_dir else profiles)
    if action == "check":
        return _print_check(profiles, chosen, gimp_dir is not None)
    raise InputError(f"unknown action {action!r}")


def _install(chosen: list[Profile], address: str | None, given: bool, new_key: bool = False) -> int:
    supported = [p for p in chosen if p.packaging != "snap"]
    for p in chosen:
        if p.packaging == "snap":
            print(f"skipped {p.label} at {p.path}: {SNAP_UNSUPPORTED}")
    if not supported:  # never make GIMP's folder ourselves: --check would then trust it
        if chosen:
            raise InputError(f"no GIMP 3 that fmm-harmonize supports was found, only the Snap one. {SNAP_UNSUPPORTED}")
        looked = ", ".join(str(root / "3.x") for _, root in profile_roots())
        raise InputError(f"no GIMP 3 profile found (looked in {looked}); start GIMP 3 once so that it "
                         "makes one, or give --gimp-dir")
    key = rendezvous.new_key() if new_key else engine_key()
    for p in supported:
        if given and not p.path.is_dir():
            print(f"created {p.path} (--create)")
        dest = install(p.path, address, flatpak=p.packaging == "flatpak", key=key)
        print(f"installed Filters > Harmonize Layer... for {p.label} in {dest}")
    share_key(key)
    print(f"engine: {sys.executable}; restart GIMP to see it" + (
        " (a new key: a running engine takes it at the next call)" if new_key else ""))
    if any(p.packaging == "flatpak" for p in supported):
        print(f"Flatpak GIMP cannot start the engine itself: start it with '{Path(sys.executable).parent}"
              f"/harmonize serve --flatpak' before using Harmonize Layer there")
    return 0


def _uninstall(profiles: list[Profile]) -> int:
    removed = [p for p in profiles if uninstall(p.path)]
    for p in removed:
        print(f"removed {plugin_dir(p.path)}")
    if not removed:
        where = ", ".join(str(plugin_dir(p.path)) for p in profiles) or "no GIMP 3 profile found"
        print(f"nothing to remove: the plug-in is not installed (looked in {where})")
    return 0


def _print_check(profiles: list[Profile], chosen: list[Profile], given: bool) -> int:
    lines: list[tuple[str, str]] = []
    if not given:
        names = ", ".join(f"{p.label} at {p.path}" for p in profiles) or "none"
        lines.append(("ok" if profiles else "MISSING", f"GIMP 3 profiles found: {names}" + (
            "" if profiles else " (is GIMP 3 installed and started once? Or give --gimp-dir)")))
    newest = {p.packaging: p for p in reversed(chosen)}
    usable = []
    for p in chosen:
        if p.packaging == "snap":
            lines.append(("skipped", f"{p.label} at {p.path}: {SNAP_UNSUPPORTED}"))
            continue
        found = check_profile(p.path)
        lines += found
        if all(status == "ok" for status, _ in found):
            usable.append(p)
    for p in profiles if not given else ():
        if p not in chosen:
            lines += check_profile(p.path, read_by=newest[p.packaging].label)
    served = set()
    for p in usable:
        config = client.read_config(plugin_dir(p.path))
        if client.address_of(config) not in served:
            served.add(client.address_of(config))
            lines.append(check_server(config, flatpak=p.packaging == "flatpak"))
    for status, message in lines:
        print(f"{status:7} {message}")
    # lower case is a note (an older copy, a server to start, an unsupported Snap); upper case a failure
    return 0 if usable and all(s.islower() for s, _ in lines) else 1
