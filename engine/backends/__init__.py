"""Backends by name, and `load`, which picks one and says which."""
from __future__ import annotations

import logging
from pathlib import Path

from ..errors import HarmonizeError, InputError
from .base import Backend

log = logging.getLogger("engine")
WEIGHTS = Path(__file__).resolve().parent.parent / "weights"
DEFAULT_MODEL = "fmm-small"
BACKENDS = ("torch", "onnxruntime")


def default_model_path(backend: str, name: str = DEFAULT_MODEL, fp16: bool = False) -> Path:
    """The shipped model file a backend loads when none is given."""
    if backend == "torch":
        return WEIGHTS / f"{name}.pt"
    return WEIGHTS / f"{name}{'-fp16' if fp16 else ''}.onnx"


def load(backend: str = "auto", model: str | Path | None = None, **options) -> Backend:
    """A loaded backend by name (`auto`: the fastest this machine can run), logging the choice."""
    if backend == "auto":
        backend = "onnxruntime"
        if model is not None and Path(model).suffix == ".pt":
            backend = "torch"
        log.info("backend: %s (auto)", backend)
    if backend == "torch":
        from .torch_backend import TorchBackend

        return TorchBackend(model or default_model_path("torch"), **options)
    if backend == "onnxruntime":
        from .onnxruntime_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(model or default_model_path("onnxruntime"), **options)
    raise InputError(f"unknown backend {backend!r}; choose from auto, {', '.join(BACKENDS)}")


__all__ = ["Backend", "BACKENDS", "HarmonizeError", "default_model_path", "load"]
