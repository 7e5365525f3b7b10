"""The backend registry: every runtime by name, with its class and what it runs. `load` and `choose`
read it (so `load` refuses any other name), and the CLI takes its `--backend` choices from it;
`gpu_backend` says which of them runs a model on this machine's GPU."""
from __future__ import annotations

import importlib
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

from ...errors import HarmonizeError, InputError
from .base import Backend

log = logging.getLogger("engine")
WEIGHTS = Path(__file__).resolve().parents[2] / "weights"
DEFAULT_MODEL = "fmm-medium"  # the shipped model: every backend, command and the plug-in load it by default


@dataclass(frozen=True)
class BackendSpec:
    """Where a backend's class lives (a module of this package) and what it runs."""

    module: str
    cls: str
    summary: str


REGISTRY = {
    "onnxruntime": BackendSpec("onnxruntime_backend", "OnnxRuntimeBackend",
                               "an ONNX model (default: the shipped FP32 one) on the CPU, or CUDA where installed"),
    "tensorrt": BackendSpec("tensorrt_backend", "TensorRTBackend",
                            "a TensorRT FP16 engine (default: the one build_engine.py built for this GPU)"),
    "torch": BackendSpec("torch_backend", "TorchBackend", "a PyTorch checkpoint (default: the shipped weights)"),
}
NAMES = ("auto", *REGISTRY)  # what --backend may name


def default_model_path(backend: str, name: str = DEFAULT_MODEL, fp16: bool = False) -> Path:
    """The shipped model file a backend loads when none is given (TensorRT builds its engine from the
    FP16 ONNX file)."""
    if backend == "torch":
        return WEIGHTS / f"{name}.pt"
    return WEIGHTS / f"{name}{'-fp16' if fp16 or backend == 'tensorrt' else ''}.onnx"


def default_engine_path() -> Path | None:
    """The engine build_engine.py writes for the shipped model and this machine's GPU, or None without
    TensorRT or a GPU."""
    from ...tensorrt.lookup import default_engine_path as engine_for

    return engine_for(DEFAULT_MODEL)


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
    """A loaded backend by registry name (`auto`: see `choose`), logging the choice and why."""
    if backend == "auto":
        backend, why = choose(model)
        log.info("backend: %s (auto: %s)", backend, why)
    if backend not in REGISTRY:
        raise InputError(f"unknown backend {backend!r}; choose from {', '.join(NAMES)}")
    spec = REGISTRY[backend]
    cls = getattr(importlib.import_module(f".{spec.module}", __name__), spec.cls)
    if model is None and backend == "tensorrt":
        model = default_engine_path()
        if model is None:
            raise HarmonizeError("TensorRT needs tensorrt (or tensorrt_rtx), cuda-python and an NVIDIA GPU; "
                                 "see: harmonize doctor")
        options.setdefault("onnx", default_model_path("tensorrt"))  # a stale engine of older weights is refused
    return cls(model or default_model_path(backend), **options)


def gpu_backend(model: str | Path | None = None) -> tuple[str, dict] | None:
    """The backend and its options that run this model (None: the shipped one) on this machine's GPU, or
    None when nothing here can: TensorRT with an engine, else ONNX Runtime's CUDA provider, else torch."""
    suffix = Path(model).suffix if model is not None else None
    if suffix == ".engine" or (model is None and (engine := default_engine_path()) is not None and engine.exists()):
        return "tensorrt", {}
    if suffix in (None, ".onnx") and importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime

        if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            return "onnxruntime", {"providers": ["CUDAExecutionProvider", "CPUExecutionProvider"]}
    if suffix in (None, ".pt") and importlib.util.find_spec("torch") is not None:
        import torch

        if torch.cuda.is_available():
            return "torch", {"device": "cuda"}
    return None


__all__ = ["NAMES", "REGISTRY", "Backend", "HarmonizeError", "choose", "default_engine_path", "default_model_path",
           "gpu_backend", "load"]
