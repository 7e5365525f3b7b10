"""`harmonize gimp install|--check|--uninstall`: put the plug-in where GIMP 3 looks for it.

The plug-in's files are copied into `<GIMP config>/plug-ins/harmonize_layer/` (GIMP wants the folder
named like the executable file), with an `engine.json` that points the plug-in at this interpreter.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import plugin

from .errors import InputError

NAME = "harmonize_layer"
FILES = ("harmonize_layer.py", "gimpfu_shim.py", "client.py", "protocol.py")


def candidate_dirs() -> list[Path]:
    """GIMP 3 configuration folders for this platform, the usual one first."""
    home = Path.home()
    system = platform.system()
    if system == "Windows":
        return [Path(os.environ.get("APPDATA", home / "AppData" / "Roaming")) / "GIMP" / "3.0"]
    if system == "Darwin":
        return [home / "Library" / "Application Support" / "GIMP" / "3.0"]
    config = Path(os.environ.get("XDG_CONFIG_HOME", home / ".config"))
    return [config / "GIMP" / "3.0", home / ".var" / "app" / "org.gimp.GIMP" / "config" / "GIMP" / "3.0"]


def find_gimp_dir(explicit: str | Path | None = None) -> Path:
    """The GIMP 3 configuration folder: the given one, else the first that exists, else the usual one."""
    if explicit:
        return Path(explicit)
    for d in candidate_dirs():
        if d.exists():
            return d
    return candidate_dirs()[0]


def plugin_dir(gimp_dir: Path) -> Path:
    return gimp_dir / "plug-ins" / NAME


def install(gimp_dir: Path, python: str = sys.executable, address: str | None = None) -> Path:
    """Copy the plug-in and write its engine config; returns the plug-in folder."""
    dest = plugin_dir(gimp_dir)
    dest.mkdir(parents=True, exist_ok=True)
    src = Path(plugin.__file__).parent
    for name in FILES:
        shutil.copyfile(src / name, dest / name)
    (dest / f"{NAME}.py").chmod(0o755)
    config = {"python": python}
    if address:
        config["address"] = address
    (dest / "engine.json").write_text(json.dumps(config, indent=1) + "\n")
    return dest


def uninstall(gimp_dir: Path) -> bool:
    """Remove the plug-in folder; False when it was not there."""
    dest = plugin_dir(gimp_dir)
    if not dest.exists():
        return False
    shutil.rmtree(dest)
    return True


def check(gimp_dir: Path) -> list[tuple[bool, str]]:
    """(ok, message) for each thing the plug-in needs; a failed message says how to fix it."""
    from plugin import client, protocol

    results = []
    dest = plugin_dir(gimp_dir)
    fix = "run: harmonize gimp install" + (f" --gimp-dir {gimp_dir}" if gimp_dir not in candidate_dirs() else "")
    results.append((gimp_dir.exists(), f"GIMP 3 folder {gimp_dir}" + ("" if gimp_dir.exists() else
                    " not found: is GIMP 3 installed and started once? Or give --gimp-dir")))
    src = Path(plugin.__file__).parent
    for name in FILES:
        f = dest / name
        if not f.exists():
            results.append((False, f"{f} missing; {fix}"))
        elif f.read_bytes() != (src / name).read_bytes():
            results.append((False, f"{f} is from another version; {fix}"))
    exe = dest / f"{NAME}.py"
    if exe.exists() and not os.access(exe, os.X_OK):
        results.append((False, f"{exe} is not executable; {fix}"))
    if all(ok for ok, _ in results[1:]) and exe.exists():
        results.append((True, f"plug-in installed in {dest}"))
    try:
        config = client.read_config(dest)
    except client.EngineError as exc:
        config = {}
        results.append((False, str(exc)))
    python = config.get("python")
    if not python:
        results.append((False, f"no engine interpreter configured in {dest / 'engine.json'}; {fix}"))
    else:
        try:
            r = subprocess.run([python, "-c", "import engine.backends, onnxruntime"], capture_output=True, text=True)
            ok, why = r.returncode == 0, (r.stderr.strip().splitlines() or ["it failed"])[-1]
        except OSError as exc:
            ok, why = False, exc.strerror
        results.append((ok, f"engine interpreter {python}" + ("" if ok else
                        f" cannot import the engine ({why}); reinstall with the harmonize of the environment"
                        " that should serve GIMP: harmonize gimp install")))
    try:
        header = client.ping(config.get("address"))
        results.append((True, f"engine server running ({header.get('backend')}, version {header.get('version')})"))
    except (client.EngineError, OSError, protocol.ProtocolError):
        results.append((True, "no engine server running: each call starts the engine (start "
                              "'harmonize serve' for about a second per call instead)"))
    return results


def main(action: str, gimp_dir: str | None, address: str | None = None) -> int:
    """The CLI's entry: prints what it did; the exit status follows --check's verdict."""
    d = find_gimp_dir(gimp_dir)
    if action == "install":
        if not gimp_dir and not d.exists():  # never make GIMP's folder ourselves: --check would then trust it
            looked = ", ".join(str(c) for c in candidate_dirs())
            raise InputError(f"no GIMP 3 configuration folder found (looked in {looked}); start GIMP 3 once "
                             "so that it makes one, or give --gimp-dir")
        dest = install(d, address=address)
        print(f"installed Filters > Harmonize Layer in {dest} (engine: {sys.executable})")
        print("restart GIMP to see it")
        return 0
    if action == "uninstall":
        print(f"removed {plugin_dir(d)}" if uninstall(d) else f"nothing installed in {plugin_dir(d)}")
        return 0
    if action == "check":
        results = check(d)
        for ok, message in results:
            print(f"{'ok     ' if ok else 'MISSING'} {message}")
        return 0 if all(ok for ok, _ in results) else 1
    raise InputError(f"unknown action {action!r}")
