"""The backend registry: every runtime by name, with its class and what it runs. `load` and `choose`
read it (so `load` refuses any other name), and the CLI takes its `--backend` choices from it. The GIMP
plug-in names devices instead (`DEVICES`, tested to match plugin/protocol.py's), which `load_device` turns
into a backend."""
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
DEVICES = ("auto", "cpu", "gpu")  # what a plug-in request may name (plugin/protocol.py DEVICES)


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


def devices(model: str | Path | None = None) -> tuple[str, ...]:
    """The devices a plug-in may ask this engine for: auto and cpu, and gpu where `gpu_backend` finds one."""
    return DEVICES if gpu_backend(model) is not None else DEVICES[:2]


def load_device(device: str, model: str | Path | None = None) -> Backend:
    """A loaded backend for a device the plug-in names: "auto" as `load`, "cpu" on the CPU only, "gpu" on
    this machine's GPU (an InputError where it has none)."""
    if device == "auto":
        return load("auto", model)
    if device == "cpu":
        if model is not None and Path(model).suffix == ".engine":
            raise InputError(f"{model} is a TensorRT engine, which runs on the GPU only")
        if model is not None and Path(model).suffix == ".pt":
            return load("torch", model, device="cpu")
        return load("onnxruntime", model, providers=["CPUExecutionProvider"])
    if device == "gpu":
        found = gpu_backend(model)
        if found is None:
            raise InputError("this engine has no GPU it can use (no TensorRT engine for it, no CUDA in ONNX "
                             "Runtime or torch); choose Auto or CPU, or see: harmonize doctor")
        name, options = found
        return load(name, model, **options)
    raise InputError(f"unknown device {device!r}; choose from {', '.join(DEVICES)}")


__all__ = ["DEVICES", "NAMES", "REGISTRY", "Backend", "HarmonizeError", "choose", "default_engine_path",
           "default_model_path", "devices", "gpu_backend", "load", "load_device"]
