"""Where the engine keeps what it makes for this user and machine (TensorRT engines, their timing caches):
the user's cache folder, never the installed package, which may be read-only, shared by several users, or
replaced by an upgrade. Standard library only: `auto` reads these paths without importing anything heavy.

An engine is code the process loads, so the folders that hold one are this user's alone: made 0700, and an
existing one that another user owns or could write into is refused (the same rule, and the same check, as
the engine server's socket folder in plugin/rendezvous.py).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from .errors import HarmonizeError

APP = "fmm-harmonize"


def cache_dir() -> Path:
    """The user's cache folder for this tool, not created here: $FMM_CACHE_DIR where set, else on Windows
    %LOCALAPPDATA%\\fmm-harmonize\\cache, else $XDG_CACHE_HOME/fmm-harmonize (when absolute, as the XDG
    spec asks) or ~/.cache/fmm-harmonize."""
    override = os.environ.get("FMM_CACHE_DIR")
    if override:  # a test's folder, or a cluster's volume mounted for every node's engines
        return Path(override).expanduser().absolute()
    # sys.platform, not os.name: pathlib reads os.name to pick its path class.
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / APP / "cache"
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    if os.path.isabs(xdg):
        return Path(xdg) / APP
    return Path.home() / ".cache" / APP


def private_cache(*parts: str, create: bool = True) -> Path:
    """cache_dir() / parts, each folder from cache_dir() down made 0700 when missing (when `create`;
    FileNotFoundError otherwise); HarmonizeError naming the first one that is not this user's alone."""
    from plugin.rendezvous import UnsafeFolder, private_folder

    folder = cache_dir()
    for part in ("", *parts):
        folder = folder / part if part else folder
        try:
            private_folder(folder, create=create)
        except UnsafeFolder as exc:
            # private_folder's reason comes before its ';', which then advises on the server's socket.
            reason = str(exc).split(";", 1)[0]
            raise HarmonizeError(f"refusing the cache folder {folder}: {reason}. It holds TensorRT engines, which "
                                 f"this process loads as code, so it must be yours alone: chmod 700 {folder} (or "
                                 "remove it), or set FMM_CACHE_DIR to a folder of your own") from None
    return folder
