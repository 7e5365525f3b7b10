"""Which TensorRT this machine has: `tensorrt` (datacenter and GeForce GPUs) where installed, else TensorRT
for RTX (`tensorrt_rtx`, whose builder runs without a GPU). One code path serves both."""
from __future__ import annotations

import functools
import importlib.metadata
import importlib.util

from ..errors import MissingDependencyError, install_hint

PLUGIN_VERSION = "1"  # stored in every engine: an engine of another plugin version is refused
NAMES = ("tensorrt", "tensorrt_rtx")
# The distributions that may bring each module: the meta package first, then the CUDA-specific wheels.
DISTRIBUTIONS = {"tensorrt": ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu11"),
                 "tensorrt_rtx": ("tensorrt-rtx", "tensorrt-rtx-cu13", "tensorrt-rtx-cu12")}


def available() -> bool:
    """Whether a TensorRT library is installed, without importing it."""
    return any(importlib.util.find_spec(name) is not None for name in NAMES)


def installed() -> tuple[str, str] | None:
    """The TensorRT module that load_tensorrt would import and its version, or None without one. Read from
    the package metadata, not by importing it (seconds), so that `auto` stays cheap."""
    for name in NAMES:
        if importlib.util.find_spec(name) is not None:
            return name, _version(name)
    return None


@functools.cache
def _version(name: str) -> str:
    """The installed version of module `name`, from its distribution's metadata (the scan of every installed
    package only when none of the known ones brought it); by importing it only where it came without any
    metadata (a system package, as on Jetson)."""
    version = _first_version(DISTRIBUTIONS[name])
    if version is None:
        version = _first_version(importlib.metadata.packages_distributions().get(name, ()))
    return version if version is not None else importlib.import_module(name).__version__


def _first_version(dists) -> str | None:
    for dist in dists:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return None


def load_tensorrt():
    """The TensorRT module: `tensorrt` where installed, else `tensorrt_rtx`."""
    for name in NAMES:
        try:
            return importlib.import_module(name)
        except ImportError:
            pass
    raise MissingDependencyError("neither tensorrt nor tensorrt_rtx is installed; install one with: "
                                 + install_hint("tensorrt"))
