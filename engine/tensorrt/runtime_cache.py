"""TensorRT-RTX's runtime cache: the kernels TensorRT for RTX compiles for this GPU when an engine first runs
(seconds, at every start without it), kept in the user's cache folder beside the engines, so the next start
loads them. Standard TensorRT compiles ahead of time and has no such cache: there this does nothing.

The file is keyed by the engine's bytes and the library's version; TensorRT-RTX itself checks the GPU and
CUDA a cache was made with and ignores one that does not fit, which is then written anew. Compiled kernels
are code the process runs, so the file lives only in the private engines folder (engine/cache.py). The cache
only saves time: a folder that cannot be read or written safely is said in the log, and the engine runs
without it.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from ..atomic import atomic_path
from ..cache import private_cache
from ..errors import HarmonizeError
from .lookup import engines_dir, library_tag

log = logging.getLogger("engine")


def runtime_cache_path(engine_bytes: bytes) -> Path:
    """Where the runtime cache of the engine with these bytes is kept, for the installed TensorRT."""
    return engines_dir() / f"runtime-{library_tag()}-{hashlib.sha256(engine_bytes).hexdigest()[:16]}.cache"


class RuntimeCache:
    """An engine's execution context, with TensorRT-RTX's runtime cache read from `path` where the library
    has one; `save` writes what it holds when that changed (after the first run compiled the kernels, and at
    close)."""

    def __init__(self, engine, path: Path):
        self.path, self.cache, self.saved = path, None, b""
        config = engine.create_runtime_config() if hasattr(engine, "create_runtime_config") else None
        if config is None or not hasattr(config, "create_runtime_cache"):  # standard TensorRT
            self.context = engine.create_execution_context()
            return
        self.cache = config.create_runtime_cache()
        try:
            if path.exists():
                private_cache("engines", create=False)  # never load code from a folder others could write into
                self.saved = path.read_bytes()
        except (OSError, HarmonizeError) as exc:
            log.warning("TensorRT-RTX's runtime cache %s is not used (%s): its kernels are compiled anew", path, exc)
            self.path = None
        if self.saved:
            self.cache.deserialize(self.saved)
        config.set_runtime_cache(self.cache)
        self.context = engine.create_execution_context(config)

    def save(self) -> bool:
        """Write the cache when it holds what the file does not; whether it wrote."""
        if self.cache is None or self.path is None:
            return False
        blob = bytes(self.cache.serialize())
        if not blob or blob == self.saved:
            return False
        try:
            private_cache("engines")
            with atomic_path(self.path) as tmp:
                tmp.write_bytes(blob)
        except (OSError, HarmonizeError) as exc:
            log.warning("TensorRT-RTX's runtime cache could not be kept in %s (%s); the next start compiles its "
                        "kernels again", self.path, exc)
            self.path = None  # said once
            return False
        self.saved = blob
        return True
