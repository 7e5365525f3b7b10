"""The backend registry: the one place that says what each runtime needs, which model files it runs, which
devices it serves, its default model, and how to tell whether this machine can run it there. `load`,
`choose`, `harmonize doctor`, `harmonize bench`, the plug-in's devices, the CLI's choices and the tests all
walk it; a new backend is one module here and one entry below.

`auto` tries the entries in order, on the GPU first: a TensorRT engine built for this GPU, ONNX Runtime's
TensorRT-RTX or CUDA provider, torch on CUDA; then the CPU: ONNX Runtime, torch for a `.pt` checkpoint."""
from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import HarmonizeError, InputError, install_hint
from ...models import DEFAULT_MODEL, shipped
from .base import Backend

log = logging.getLogger("engine")
DEVICES = ("auto", "cpu", "gpu")  # the words of --device, and of the plug-in's dialog (plugin/protocol.py)
WHERE = {"auto": "this machine", "cpu": "the CPU", "gpu": "the GPU"}  # the devices in a sentence
Probe = Callable[[str, "Path | None"], "tuple[dict | None, str]"]


def installed(module: str) -> bool:
    """Whether a module can be imported, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a dotted name whose package is missing (cuda.bindings without cuda)
        return False
    except ValueError:  # a module already imported with no spec (tests' stand-ins)
        return True


# The probes: given a device and the model file asked for (None: the shipped one), the options that load it
# there, or None and why not. `probed` has checked the entry's `needs` first. They import only what they must,
# most of them nothing.

def probe_tensorrt(device: str, model: Path | None) -> tuple[dict | None, str]:
    from ...tensorrt.device import compute_capability
    from ...tensorrt.library import available
    from ...tensorrt.lookup import default_engine_path

    if not available():
        return None, "no tensorrt or tensorrt_rtx installed"
    if compute_capability() is None:
        return None, "no GPU found by cuda.bindings"
    if model is not None:
        return {}, f"engine {model}"
    engine = default_engine_path(DEFAULT_MODEL)
    if engine is None:
        return None, f"no shipped {shipped('onnx-fp16').name} to build an engine from"
    if not engine.exists():
        return None, f"no engine built for this GPU (python build_engine.py writes {engine})"
    return {"model": engine, "onnx": shipped("onnx-fp16")}, f"engine {engine}"


ORT_GPU_PROVIDERS = ("NvTensorRTRTXExecutionProvider", "CUDAExecutionProvider")  # best first


def probe_onnxruntime(device: str, model: Path | None) -> tuple[dict | None, str]:
    if device == "cpu":
        return {"providers": ["CPUExecutionProvider"]}, "ONNX Runtime on the CPU"
    import onnxruntime

    # The TensorRT-RTX provider's name is spelt two ways in NVIDIA's own packages.
    available = {p.lower(): p for p in onnxruntime.get_available_providers()}
    for wanted in ORT_GPU_PROVIDERS:
        if wanted.lower() in available:
            return {"providers": [available[wanted.lower()], "CPUExecutionProvider"]}, f"ONNX Runtime's {wanted}"
    return None, "ONNX Runtime has no GPU provider (pip install onnxruntime-gpu, or onnxruntime-trt-rtx)"


def nvidia_driver() -> bool:
    """Whether NVIDIA's driver library loads here: a cheap test before importing torch to ask about CUDA."""
    import ctypes

    try:
        ctypes.CDLL("nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1")
        return True
    except OSError:
        return False


def probe_torch(device: str, model: Path | None) -> tuple[dict | None, str]:
    if device == "cpu":
        return {"device": "cpu"}, "PyTorch on the CPU"
    if not nvidia_driver():  # importing torch takes seconds; `harmonize run` on a CPU should not pay for it
        return None, "no NVIDIA driver (libcuda) on this machine"
    import torch

    if not torch.cuda.is_available():
        return None, "torch has no CUDA (a CUDA build of torch and an NVIDIA GPU)"
    return {"device": "cuda"}, f"PyTorch on {torch.cuda.get_device_name(0)}"


@dataclass(frozen=True)
class BackendSpec:
    """A registry entry: what a backend needs, runs and serves, and how to ask whether it can here."""

    module: str  # the module of this package that holds the class, imported only when loaded
    cls: str
    summary: str
    extra: str  # the pip extra that installs what it needs (setup.cfg; "" for the default install)
    needs: tuple[str, ...]  # the modules it imports: without one, it runs nowhere
    suffixes: tuple[str, ...]  # the model files it runs
    devices: tuple[str, ...]  # where it can compute: "cpu", "gpu"
    shipped: str  # its default model: a kind of engine/models.py `shipped` (TensorRT: what its engine is built from)
    probe: Probe = field(repr=False)


REGISTRY = {
    "tensorrt": BackendSpec("tensorrt_backend", "TensorRTBackend",
                            "a TensorRT FP16 engine (default: the one build_engine.py built for this GPU)",
                            "tensorrt", ("cuda.bindings",), (".engine",), ("gpu",), "onnx-fp16", probe_tensorrt),
    "onnxruntime": BackendSpec("onnxruntime_backend", "OnnxRuntimeBackend",
                               "an ONNX model (default: the shipped FP32 one) on the CPU, or a GPU provider where "
                               "installed", "", ("onnxruntime",), (".onnx",), ("gpu", "cpu"), "onnx",
                               probe_onnxruntime),
    "torch": BackendSpec("torch_backend", "TorchBackend", "a PyTorch checkpoint (default: the shipped weights)",
                         "train", ("torch",), (".pt",), ("gpu", "cpu"), "pt", probe_torch),
}


@dataclass(frozen=True)
class Choice:
    """A backend that can run a model on a device here: its name, the device, the options that load it, why."""

    backend: str
    device: str
    options: dict
    why: str


def runs(spec: BackendSpec, model: Path | None) -> bool:
    """Whether an entry runs this model file (None: the shipped model, which every entry runs)."""
    return model is None or model.suffix.lower() in spec.suffixes


Row = tuple[str, "Choice | None", str]  # a backend's name, what it would do or None, and why


def probed(device: str, model: str | Path | None = None, backend: str = "auto") -> Iterator[Row]:
    """Every entry (or only `backend`) that runs this model on `device` ("cpu" or "gpu"), probed one at a time
    in the order `auto` prefers them: (name, its Choice or None, why)."""
    model = Path(model) if model is not None else None
    for name, spec in REGISTRY.items():
        if backend in ("auto", name) and device in spec.devices and runs(spec, model):
            missing = next((m for m in spec.needs if not installed(m)), None)
            if missing is not None:
                how = install_hint(spec.extra) if spec.extra else f"pip install {missing}"
                yield name, None, f"{missing} is not installed ({how})"
                continue
            options, why = spec.probe(device, model)
            yield name, None if options is None else Choice(name, device, options, why), why


def serving(device: str, model: str | Path | None = None, backend: str = "auto") -> list[Row]:
    """All of `probed`: what each entry would do on `device`, for doctor and the plug-in's devices."""
    return list(probed(device, model, backend))


def choose(model: str | Path | None = None, device: str = "auto", backend: str = "auto") -> Choice:
    """The backend that runs this model (None: the shipped one) on `device` here, the first the registry
    offers (`auto`: the GPU first, then the CPU); an InputError, naming what was looked for, where none can."""
    if backend != "auto" and backend not in REGISTRY:
        raise InputError(f"unknown backend {backend!r}; choose from auto, {', '.join(sorted(REGISTRY))}")
    if device not in DEVICES:
        raise InputError(f"unknown device {device!r}; choose from {', '.join(DEVICES)}")
    looked = []
    for d in ("gpu", "cpu") if device == "auto" else (device,):
        for name, choice, why in probed(d, model, backend):  # the first that can wins; the rest are not asked
            if choice is not None:
                return choice
            looked.append(f"{name} on {WHERE[d]}: {why}")
    what = model if model is not None else f"the shipped model ({DEFAULT_MODEL})"
    if not looked:
        by = "" if backend == "auto" else f" with {backend}"
        raise InputError(f"nothing here runs {what}{by} on {WHERE[device]}; see: harmonize doctor")
    hint = (f"; install a GPU runtime: {install_hint('tensorrt')} then python build_engine.py, or "
            "pip install onnxruntime-gpu, or a CUDA build of torch" if device == "gpu" else "")
    raise InputError(f"cannot run {what} on {WHERE[device]}: {'; '.join(looked)}{hint}")


def load(backend: str = "auto", model: str | Path | None = None, device: str = "auto", **options) -> Backend:
    """A loaded backend by registry name on a device (`auto`: see `choose`), logging the choice and why;
    `options` go to its class over the registry's."""
    choice = choose(model, device, backend)
    if backend == "auto" or device == "auto":
        log.info("backend: %s (%s: %s)", choice.backend, device, choice.why)
    spec = REGISTRY[choice.backend]
    cls = getattr(importlib.import_module(f".{spec.module}", __name__), spec.cls)
    settings = {"model": model if model is not None else shipped(spec.shipped), **choice.options, **options}
    return cls(**settings)


__all__ = ["DEVICES", "REGISTRY", "Backend", "BackendSpec", "Choice", "HarmonizeError", "choose", "load",
           "serving"]
