"""The devices the GIMP plug-in's dialog offers (plugin/protocol.py DEVICES: auto, cpu, gpu), and the backend
that serves each: a GIMP idea, which the runtime knows nothing of; it only says which backend runs on a GPU."""
from __future__ import annotations

from pathlib import Path

from plugin.protocol import DEVICES

from ..errors import InputError
from ..runtime.backends import Backend, gpu_backend, load


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
