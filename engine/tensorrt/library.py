"""Which TensorRT this machine has: `tensorrt` (datacenter and GeForce GPUs) where installed, else TensorRT
for RTX (`tensorrt_rtx`, whose builder runs without a GPU). One code path serves both."""
from __future__ import annotations

import importlib.util

from ..errors import MissingDependencyError, install_hint

PLUGIN_VERSION = "1"  # stored in every engine: an engine of another plugin version is refused
NAMES = ("tensorrt", "tensorrt_rtx")


def available() -> bool:
    """Whether a TensorRT library is installed, without importing it."""
    return any(importlib.util.find_spec(name) is not None for name in NAMES)


def load_tensorrt():
    """The TensorRT module: `tensorrt` where installed, else `tensorrt_rtx`."""
    for name in NAMES:
        try:
            return importlib.import_module(name)
        except ImportError:
            pass
    raise MissingDependencyError("neither tensorrt nor tensorrt_rtx is installed; install one with: "
                                 + install_hint("tensorrt"))
