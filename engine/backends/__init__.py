"""Backends by name, and `load`, which picks one and says which."""
from __future__ import annotations

import logging
from pathlib import Path

from ..errors import HarmonizeError, InputError
from .base import Backend

log = logging.getLogger("engine")
WEIGHTS = Path(__file__).resolve().parent.parent / "weights"
DEFAULT_MODEL = "fmm-small"
BACKENDS = ("torch", "onnxruntime", "tensorrt")


def default_model_path(backend: str, name: str = DEFAULT_MODEL, fp16: bool = False) -> Path:
    """The shipped model file a backend loads when none is given."""
    if backend == "torch":
        return WEIGHTS / f"{name}.pt"
    return WEIGHTS / f"{name}{'-fp16' if fp16 else ''}.onnx"


def default_engine_path() -> Path | None:
    """The engine build_engine.py writes for this machine's GPU, or None without TensorRT or a GPU."""
    try:
        from ..build import ENGINES, local_compute_capability
        from ..tensorrt_plugin import trt

        trt()
    except ImportError:
        return None
    cc = local_compute_capability()
    return None if cc is None else ENGINES / f"{DEFAULT_MODEL}-fp16-sm{cc}.engine"


def choose(model: str | Path | None = None) -> tuple[str, str]:
    """The backend `auto` takes for this model file (None: the shipped model) on this machine, and why:
    TensorRT when importable with a GPU and an engine built for it, else ONNX Runtime."""
    suffix = Path(model).suffix if model is not None else None
    engine = default_engine_path() if model is None else None
    if suffix == ".pt":
        return "torch", "a PyTorch checkpoint"
    if suffix == ".engine" or (engine is not None and engine.exists()):
        return "tensorrt", f"engine {model or engine}"
    return "onnxruntime", "no TensorRT engine for this GPU" if engine is not None else "no TensorRT or no GPU"


def load(backend: str = "auto", model: str | Path | None = None, **options) -> Backend:
    """A loaded backend by name (`auto`: see `choose`), logging the choice and why."""
    if backend == "auto":
        backend, why = choose(model)
        log.info("backend: %s (auto: %s)", backend, why)
    if backend == "torch":
        from .torch_backend import TorchBackend

        return TorchBackend(model or default_model_path("torch"), **options)
    if backend == "onnxruntime":
        from .onnxruntime_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(model or default_model_path("onnxruntime"), **options)
    if backend == "tensorrt":
        from .tensorrt_backend import TensorRTBackend

        engine = model or default_engine_path()
        if engine is None:
            raise HarmonizeError("TensorRT needs tensorrt (or tensorrt_rtx), cuda-python and an NVIDIA GPU; "
                                 "see: harmonize doctor")
        return TensorRTBackend(engine, **options)
    raise InputError(f"unknown backend {backend!r}; choose from auto, {', '.join(BACKENDS)}")


__all__ = ["Backend", "BACKENDS", "HarmonizeError", "choose", "default_engine_path", "default_model_path", "load"]
